//! `mlhost plugins`: lists each plugin and what it provides.

use crate::plugins::{host_abi_version, join_paths, PluginRegistry, Provided};
use clap::Args;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Arguments of `mlhost plugins` (none besides the global ones).
#[derive(Debug, Clone, Default, Args)]
pub struct PluginsArgs {}

/// Prints the listing to stdout.
pub fn run(registry: &PluginRegistry, _args: &PluginsArgs) -> anyhow::Result<()> {
    print!("{}", render(registry));
    Ok(())
}

fn names_of<T>(map: &BTreeMap<String, Provided<T>>, plugin: usize) -> Vec<(&str, &T)> {
    map.iter()
        .filter(|(_, p)| p.plugin == plugin)
        .map(|(name, p)| (name.as_str(), &*p.item))
        .collect()
}

/// The listing as text.
pub fn render(registry: &PluginRegistry) -> String {
    let mut out = String::new();
    if registry.plugins.is_empty() {
        let _ = writeln!(
            out,
            "no plugins found in {} (host plugin-api {})",
            join_paths(&registry.searched),
            host_abi_version()
        );
        return out;
    }
    for (i, plugin) in registry.plugins.iter().enumerate() {
        let info = &plugin.info;
        let _ = writeln!(
            out,
            "{} {} (plugin-api {})",
            info.name, info.version, info.abi_version
        );
        let _ = writeln!(out, "  path: {}", plugin.path.display());
        if !info.description.is_empty() {
            let _ = writeln!(out, "  {}", info.description);
        }
        let classes: Vec<&str> = names_of(&registry.model_classes, i)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let _ = writeln!(out, "  model classes: {}", list_or_none(&classes));
        let compilers: Vec<String> = names_of(&registry.compilers, i)
            .into_iter()
            .map(|(n, c)| format!("{n} (artifacts: .{})", c.artifact_extension()))
            .collect();
        let _ = writeln!(out, "  compilers: {}", list_or_none(&compilers));
        let devices = names_of(&registry.devices, i);
        if devices.is_empty() {
            let _ = writeln!(out, "  devices: (none)");
        } else {
            let _ = writeln!(out, "  devices:");
            for (name, device) in devices {
                let _ = writeln!(out, "    {name}: {}", device.description());
            }
        }
    }
    out
}

fn list_or_none<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items
            .iter()
            .map(|s| s.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
