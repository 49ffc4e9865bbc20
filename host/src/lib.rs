//! The mlhost host: loads model / compiler / device plugins dynamically (abi_stable) and drives
//! them from the command line. Built as a library plus a thin `main` so that other front ends
//! (an HTTP server) reuse the plugin registry, the file I/O and the commands.
//!
//! The host depends only on `plugin-api`, never on a plugin crate.

pub mod cli;
pub mod error;
pub mod hub;
pub mod io;
pub mod manifest;
pub mod models;
pub mod oip;
pub mod pipeline;
pub mod plugins;
pub mod progress;
pub mod serve;

pub use plugins::{LoadedPlugin, PluginRegistry, RegistryError};
