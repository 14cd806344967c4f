//! The `patchpanda` operator command as a library, so the end-to-end tests
//! can start the local stack in-process.

pub mod commands;
pub mod context;
pub mod dev;
pub mod dev_emulator;
pub mod dev_identity;
pub mod dev_scheduler;
pub mod logging;
pub mod output;
