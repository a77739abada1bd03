//! Upstreams: backends, their hosts and how one is picked.

pub mod backend;
