pub mod attribute;
pub mod bench;
pub mod post;
pub mod segment;
pub mod synth;
