//! Real TCP and UDP traffic through the director in network-namespace labs
//! (`director_tests::lab`), and the lab's own guarantees (`selftest`).

mod dual_stack;
mod edges;
mod flood;
mod fragments;
mod ipv6;
mod modes;
mod selftest;
mod tunnels;
