pub mod attribute;
pub mod bench;
