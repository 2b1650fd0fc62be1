pub mod bench;
pub mod fixture;
pub mod lab;
pub mod lvs;
