//! A real CNCF distribution registry on loopback, built by
//! `scripts/ensure-go-tools.sh` (`make test` runs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::paths::tool_bin;
use crate::pki::TestCa;
use crate::wait::free_port;

pub struct Registry {
    child: Child,
    pub host: String,
    pub dir: tempfile::TempDir,
    pub ca: Option<TestCa>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Options of a test registry.
#[derive(Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with a certificate from a fresh test CA.
    pub tls: bool,
    /// Require this user and password (htpasswd).
    pub user: Option<(&'static str, &'static str)>,
}

impl Registry {
    pub fn start(options: RegistryOptions) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), options, None)
    }

    /// Starts on `port` (or a free one) with storage in `dir`: restarting
    /// on the same directory keeps the content.
    pub fn start_in(dir: tempfile::TempDir, options: RegistryOptions, port: Option<u16>) -> Self {
        let port = port.unwrap_or_else(free_port);
        let d = dir.path();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            d.join("data").display()
        );
        let ca = options.tls.then(|| {
            let ca = TestCa::new("registry test CA");
            let (cert, key) = ca.leaf("registry");
            std::fs::write(d.join("tls.crt"), cert).unwrap();
            std::fs::write(d.join("tls.key"), key).unwrap();
            std::fs::write(d.join("ca.crt"), ca.pem()).unwrap();
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("tls.crt").display(),
                d.join("tls.key").display()
            );
            ca
        });
        if let Some((user, pass)) = options.user {
            let hash = bcrypt::hash(pass, 4).unwrap();
            std::fs::write(d.join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
            config += &format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                d.join("htpasswd").display()
            );
        }
        std::fs::write(d.join("config.yml"), config).unwrap();
        let child = Command::new(tool_bin("registry"))
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let host = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            host,
            dir,
            ca,
        }
    }

    /// Stops the registry and returns its directory (for a restart).
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// A `sources.yml` for this registry: insecure when plain HTTP, its CA otherwise.
    pub fn sources_yaml(&self) -> String {
        match &self.ca {
            None => format!("insecure_sources: [\"{}\"]\n", self.host),
            Some(_) => format!(
                "source_authorities:\n  \"{}\":\n    - type: Path\n      path: {}\n",
                self.host,
                self.dir.path().join("ca.crt").display()
            ),
        }
    }

    pub fn write_sources(&self, dir: &Path) -> PathBuf {
        let path = dir.join("sources.yml");
        std::fs::write(&path, self.sources_yaml()).unwrap();
        path
    }
}

/// A docker config.json with one `auths` entry.
pub fn docker_config(dir: &Path, host: &str, user: &str, pass: &str) -> PathBuf {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let path = dir.join(format!("docker-{user}-{pass}.json"));
    std::fs::write(
        &path,
        format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    path
}
