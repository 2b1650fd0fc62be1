//! The integration tests, in one binary with a module per area (one link of the whole
//! stack instead of one per file). Every test here needs root; see tests/README.md for
//! the rules they follow and how to run one of them.

mod cli;
mod control_index;
mod daemon;
mod fixtures;
mod ha_pair;
mod lab;
mod neighbours;
mod scale_out;
mod support;
