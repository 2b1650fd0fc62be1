//! Empty library target: lets the director crate name this crate as a build dependency,
//! so cargo rebuilds the XDP object when it changes. The programs live in main.rs.
#![no_std]
