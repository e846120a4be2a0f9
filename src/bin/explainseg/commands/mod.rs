pub mod attribute;
pub mod bench;
pub mod eval;
pub mod eval_grid;
pub mod eval_report;
pub mod post;
pub mod segment;
pub mod train;
