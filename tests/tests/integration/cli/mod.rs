//! The `director` binary as an operator drives it: ipvsadm's syntax, `attach`/`detach`,
//! and the real servers' `decap`.

mod attach;
mod decap;
mod ipv6;
mod ipvsadm;
