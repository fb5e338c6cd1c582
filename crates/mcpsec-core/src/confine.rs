//! `[confine]` and the confinement keys of `[proxy.NAME]`: what the
//! processes mcpsec starts may touch (enforced by `mcpsec-confine`).

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{ConfigError, value_error};
use crate::units;

/// `[confine] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfineMode {
    /// Every rule holds, or the process is not started (the default).
    #[default]
    Required,
    /// What the kernel supports holds; the rest is warned about.
    BestEffort,
    /// No confinement.
    Off,
}

/// `network`: which TCP connections a confined process may open.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetworkSetting {
    /// None (the default).
    #[default]
    None,
    /// Any.
    All,
    /// TCP connect to these ports only.
    Ports(Vec<u16>),
}

/// `[confine]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfineSettings {
    /// Required, best effort or off.
    pub mode: ConfineMode,
    /// Extra paths every confined process may read and execute.
    pub read: Vec<PathBuf>,
    /// Extra paths every confined process may write.
    pub write: Vec<PathBuf>,
    /// The network of `execute_command` programs (upstreams: `[proxy.NAME] network`).
    pub network: NetworkSetting,
    /// `RLIMIT_NOFILE`.
    pub max_open_files: u64,
    /// `RLIMIT_NPROC`.
    pub max_processes: u64,
    /// `RLIMIT_FSIZE`, in bytes.
    pub max_file_size: u64,
    /// `RLIMIT_AS`, in bytes.
    pub max_address_space: u64,
}

impl Default for ConfineSettings {
    fn default() -> Self {
        ConfineSettings {
            mode: ConfineMode::Required,
            read: Vec::new(),
            write: Vec::new(),
            network: NetworkSetting::None,
            max_open_files: 4096,
            max_processes: 4096,
            max_file_size: 1 << 30,
            max_address_space: 16 << 30,
        }
    }
}

/// The confinement keys of one `[proxy.NAME]`, added to `[confine]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamConfine {
    /// Extra paths the upstream may read.
    pub read: Vec<PathBuf>,
    /// Extra paths the upstream may write.
    pub write: Vec<PathBuf>,
    /// Its network (default none).
    pub network: NetworkSetting,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfine {
    mode: Option<ConfineMode>,
    read: Option<Vec<PathBuf>>,
    write: Option<Vec<PathBuf>>,
    network: Option<toml::Value>,
    max_open_files: Option<u32>,
    max_processes: Option<u32>,
    max_file_size: Option<String>,
    max_address_space: Option<String>,
}

pub(crate) fn parse(raw: RawConfine) -> Result<ConfineSettings, ConfigError> {
    let mut c = ConfineSettings::default();
    if let Some(m) = raw.mode {
        c.mode = m;
    }
    c.read = absolute("confine.read", raw.read.unwrap_or_default())?;
    c.write = absolute("confine.write", raw.write.unwrap_or_default())?;
    if let Some(n) = raw.network {
        c.network = network("confine.network", &n)?;
    }
    let positive = |key: &str, n: u32| {
        if n == 0 { Err(value_error(key, "must be larger than 0")) } else { Ok(u64::from(n)) }
    };
    if let Some(n) = raw.max_open_files {
        c.max_open_files = positive("confine.max_open_files", n)?;
    }
    if let Some(n) = raw.max_processes {
        c.max_processes = positive("confine.max_processes", n)?;
    }
    for (key, text, slot) in [
        ("confine.max_file_size", raw.max_file_size, &mut c.max_file_size),
        ("confine.max_address_space", raw.max_address_space, &mut c.max_address_space),
    ] {
        if let Some(t) = text {
            let v = units::parse_size(&t).map_err(|m| value_error(key, m))?;
            if v == 0 {
                return Err(value_error(key, "must be larger than 0"));
            }
            *slot = v;
        }
    }
    Ok(c)
}

/// The confinement keys of `[proxy.NAME]`.
pub(crate) fn parse_upstream(
    name: &str,
    read: Option<Vec<PathBuf>>,
    write: Option<Vec<PathBuf>>,
    net: Option<toml::Value>,
) -> Result<UpstreamConfine, ConfigError> {
    Ok(UpstreamConfine {
        read: absolute(&format!("proxy.{name}.read"), read.unwrap_or_default())?,
        write: absolute(&format!("proxy.{name}.write"), write.unwrap_or_default())?,
        network: match net {
            Some(n) => network(&format!("proxy.{name}.network"), &n)?,
            None => NetworkSetting::None,
        },
    })
}

fn absolute(key: &str, paths: Vec<PathBuf>) -> Result<Vec<PathBuf>, ConfigError> {
    for p in &paths {
        if !p.is_absolute() {
            return Err(value_error(key, format!("`{}` is not an absolute path", p.display())));
        }
    }
    Ok(paths)
}

/// `"none"`, `"all"`, or a list of TCP ports (`["443", 8080]`).
fn network(key: &str, v: &toml::Value) -> Result<NetworkSetting, ConfigError> {
    let bad = || value_error(key, "must be \"none\", \"all\" or a list of TCP ports such as [\"443\"]");
    match v {
        toml::Value::String(s) if s == "none" => Ok(NetworkSetting::None),
        toml::Value::String(s) if s == "all" => Ok(NetworkSetting::All),
        toml::Value::Array(items) => {
            let mut ports = Vec::new();
            for item in items {
                let port = match item {
                    toml::Value::String(s) => s.parse::<u16>().ok(),
                    toml::Value::Integer(n) => u16::try_from(*n).ok(),
                    _ => None,
                };
                match port {
                    Some(p) if p > 0 => ports.push(p),
                    _ => return Err(value_error(key, format!("`{item}` is not a TCP port (1 to 65535)"))),
                }
            }
            Ok(NetworkSetting::Ports(ports))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::Config;

    use super::*;

    #[test]
    fn confine_section_parses_and_checks_its_values() {
        let c = Config::from_toml_str(
            "[confine]\nmode = \"best_effort\"\nread = [\"/srv/data\"]\nnetwork = [\"443\", 8080]\nmax_file_size = \"1MiB\"",
        )
        .unwrap();
        assert_eq!(c.confine.mode, ConfineMode::BestEffort);
        assert_eq!(c.confine.read, vec![PathBuf::from("/srv/data")]);
        assert_eq!(c.confine.network, NetworkSetting::Ports(vec![443, 8080]));
        assert_eq!(c.confine.max_file_size, 1 << 20);
        assert_eq!(Config::default().confine.mode, ConfineMode::Required);
        for (text, key) in [
            ("[confine]\nmode = \"maybe\"", "mode"),
            ("[confine]\nread = [\"relative\"]", "confine.read"),
            ("[confine]\nnetwork = \"some\"", "confine.network"),
            ("[confine]\nnetwork = [\"70000\"]", "confine.network"),
            ("[confine]\nmax_processes = 0", "confine.max_processes"),
            ("[proxy.fs]\nnetwork = [0]", "proxy.fs.network"),
        ] {
            let e = Config::from_toml_str(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let c = Config::from_toml_str("[proxy.fs]\nwrite = [\"/srv/www\"]\nnetwork = \"all\"").unwrap();
        assert_eq!(c.proxy["fs"].confine.write, vec![PathBuf::from("/srv/www")]);
        assert_eq!(c.proxy["fs"].confine.network, NetworkSetting::All);
    }
}
