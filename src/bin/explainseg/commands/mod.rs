pub mod attribute;
pub mod bench;
pub mod demo;
pub mod post;
pub mod segment;
pub mod synth;
