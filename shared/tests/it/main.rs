//! The shared crate's integration tests, in one binary to keep builds short.

mod bus_local;
mod contract;
mod store_crash;
