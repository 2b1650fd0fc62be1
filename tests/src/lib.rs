
pub mod lab;
pub mod fixture;
