//! Where `steward run` finds the Kubernetes API and its credentials, with errors that name the
//! file, what is missing and what to do.
//!
//! The order is kubectl's and kube-rs' `Config::infer`'s: an explicit `kubeconfig` path from
//! the config file; else the files in `KUBECONFIG`; else `~/.kube/config` when it exists; else
//! the pod's service account (`KUBERNETES_SERVICE_HOST`/`_PORT` and the token, CA and namespace
//! under [`SERVICE_ACCOUNT_DIR`]). kube-rs does the reading; this module only chooses, and
//! turns a failure into a sentence. Nothing here needs a kube cargo feature beyond `client`
//! (which includes `config`): kubeconfig YAML, exec credential plugins and the in-cluster
//! config are all in it.
//!
//! What it is not: a token refresher of its own (kube-rs re-reads the service account token
//! file and re-runs exec plugins when their credentials expire) nor a context switcher (the
//! kubeconfig's `current-context` is used unless `context` names another).

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Where a pod's service account credentials are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where the client configuration came from (for the start-up line and errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `[platform.kubernetes] kubeconfig` (or the lease's).
    File(PathBuf),
    /// The files `KUBECONFIG` lists (merged, as kubectl does).
    Env(String),
    /// `~/.kube/config`.
    Home(PathBuf),
    /// The pod's service account.
    InCluster,
    /// A client the program built itself ([`KubeApi::from_client`]).
    Given,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "kubeconfig {}", p.display()),
            Source::Env(v) => write!(f, "KUBECONFIG={v}"),
            Source::Home(p) => write!(f, "kubeconfig {}", p.display()),
            Source::InCluster => write!(f, "the pod's service account ({SERVICE_ACCOUNT_DIR})"),
            Source::Given => write!(f, "a client given by the program"),
        }
    }
}

/// Why no client configuration could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error(
        "no Kubernetes client configuration: KUBECONFIG is not set, {home} does not exist, and \
         this is not a pod (KUBERNETES_SERVICE_HOST is not set); set `kubeconfig` in \
         [platform.kubernetes], export KUBECONFIG, or run Steward in the cluster under a service \
         account"
    )]
    Nothing { home: String },
    #[error("cannot use {source_}: {hint}")]
    Kubeconfig {
        source_: Source,
        hint: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot build a Kubernetes client from {source_} (its TLS settings?)")]
    Client {
        source_: Source,
        #[source]
        source: kube::Error,
    },
    #[error(
        "running in a pod (KUBERNETES_SERVICE_HOST is set) but its service account cannot be \
         read: {hint}"
    )]
    InCluster {
        hint: String,
        #[source]
        source: kube::config::InClusterError,
    },
}

/// What a user should do about a kubeconfig error, in one clause.
fn kubeconfig_hint(e: &kube::config::KubeconfigError, context: Option<&str>) -> String {
    use kube::config::KubeconfigError as E;
    match e {
        E::ReadConfig(_, path) => format!(
            "{} cannot be read (does it exist, and may this user read it?)",
            path.display()
        ),
        E::Parse(_) => "it is not a kubeconfig (YAML with clusters, users, contexts)".into(),
        E::CurrentContextNotSet => {
            "it has no current-context; set one (`kubectl config use-context NAME`) or set \
             `context` in [platform.kubernetes]"
                .into()
        }
        E::LoadContext(name) => match context {
            Some(c) => format!("it has no context `{c}`"),
            None => format!("its current-context `{name}` is not among its contexts"),
        },
        E::LoadClusterOfContext(name) => {
            format!("the context's cluster `{name}` is not among its clusters")
        }
        E::MissingClusterUrl => "the context's cluster has no `server` URL".into(),
        E::ParseClusterUrl(_) => "the context's cluster `server` is not a URL".into(),
        E::LoadCertificateAuthority(_) => {
            "its certificate-authority(-data) cannot be read or decoded".into()
        }
        E::LoadClientCertificate(_) | E::LoadClientKey(_) => {
            "its user's client-certificate or client-key cannot be read or decoded".into()
        }
        E::ParseCertificates(_) => "a certificate in it is not PEM".into(),
        _ => "see the cause below".into(),
    }
}

fn in_cluster_hint(e: &kube::config::InClusterError) -> String {
    use kube::config::InClusterError as E;
    match e {
        E::ReadDefaultNamespace(_) | E::ReadCertificateBundle(_) => {
            format!("{SERVICE_ACCOUNT_DIR} is not mounted (automountServiceAccountToken: false?)")
        }
        E::ReadEnvironmentVariable(_) => {
            "KUBERNETES_SERVICE_PORT is not set next to KUBERNETES_SERVICE_HOST".into()
        }
        E::ParseClusterPort(_) | E::ParseClusterUrl(_) => {
            "KUBERNETES_SERVICE_HOST/PORT do not make a URL".into()
        }
        _ => "see the cause below".into(),
    }
}

/// The client configuration, from `kubeconfig` when given, else found as the module doc says;
/// `env` reads environment variables (the process's in the product, a map in tests).
pub async fn client_config(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(kube::Config, Source), ClientConfigError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let from_file = |source: Source, read: Result<Kubeconfig, kube::config::KubeconfigError>| {
        let options = options.clone();
        async move {
            let wrap = |e: kube::config::KubeconfigError| ClientConfigError::Kubeconfig {
                hint: kubeconfig_hint(&e, options.context.as_deref()),
                source_: source.clone(),
                source: e,
            };
            let kubeconfig = read.map_err(wrap)?;
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(wrap)?;
            Ok((config, source))
        }
    };
    if let Some(path) = kubeconfig {
        return from_file(
            Source::File(path.to_path_buf()),
            Kubeconfig::read_from(path),
        )
        .await;
    }
    if let Some(value) = env("KUBECONFIG").filter(|v| !v.is_empty()) {
        let paths: Vec<PathBuf> = std::env::split_paths(&value)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        let merged = paths.iter().try_fold(Kubeconfig::default(), |m, p| {
            Kubeconfig::read_from(p).and_then(|c| m.merge(c))
        });
        return from_file(Source::Env(value), merged).await;
    }
    let home = env("HOME").map(|h| Path::new(&h).join(".kube").join("config"));
    if let Some(path) = home.as_ref().filter(|p| p.exists()) {
        return from_file(Source::Home(path.clone()), Kubeconfig::read_from(path)).await;
    }
    if env("KUBERNETES_SERVICE_HOST").is_some() {
        let config = kube::Config::incluster().map_err(|e| ClientConfigError::InCluster {
            hint: in_cluster_hint(&e),
            source: e,
        })?;
        return Ok((config, Source::InCluster));
    }
    Err(ClientConfigError::Nothing {
        home: home
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "~/.kube/config ($HOME is not set)".into()),
    })
}

/// A connection to one API server: the client the platform and a Kubernetes Lease share.
/// Building it reads files only; the API server is first asked by the first request.
#[derive(Clone)]
pub struct KubeApi {
    pub(crate) client: kube::Client,
    source: Source,
    default_namespace: String,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl KubeApi {
    /// The client from [`client_config`], refusing answers larger than `max_body_bytes`.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
        max_body_bytes: u64,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ClientConfigError> {
        let (config, source) = client_config(kubeconfig, context, env).await?;
        let default_namespace = config.default_namespace.clone();
        let client = super::limited_client(config, max_body_bytes).map_err(|source_| {
            ClientConfigError::Client {
                source_: source.clone(),
                source: source_,
            }
        })?;
        Ok(KubeApi {
            client,
            source,
            default_namespace,
        })
    }

    /// Where the configuration came from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The namespace the kubeconfig's context (or the service account) names.
    pub fn default_namespace(&self) -> &str {
        &self.default_namespace
    }

    /// A connection over an existing client (tests: a fake API server).
    pub fn from_client(client: kube::Client, namespace: &str) -> Self {
        KubeApi {
            client,
            source: Source::Given,
            default_namespace: namespace.to_string(),
        }
    }
}

/// Chooses rustls' crypto provider for the process, once: kube-rs builds its TLS config from
/// the process default, which rustls cannot pick by itself when more than one provider is
/// compiled in (a test build has both ring and aws-lc). aws-lc is the product's (bollard and
/// reqwest use it too). A provider chosen earlier (a test's) stays.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env_of(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
        clusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:6443\n\
        users:\n- name: steward\n  user:\n    token: not-a-secret\n\
        contexts:\n- name: test\n  context:\n    cluster: fake\n    user: steward\n    namespace: db\n";

    #[tokio::test]
    async fn an_explicit_kubeconfig_is_read_and_its_context_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, KUBECONFIG).unwrap();
        let (config, source) = client_config(Some(&path), None, env_of(&[])).await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "http://127.0.0.1:6443/");
        assert_eq!(config.default_namespace, "db");
        assert_eq!(source, Source::File(path.clone()));

        let e = client_config(Some(&path), Some("prod"), env_of(&[]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("it has no context `prod`"), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }

    #[tokio::test]
    async fn kubeconfig_then_home_then_the_service_account() {
        let dir = tempfile::tempdir().unwrap();
        let listed = dir.path().join("listed");
        std::fs::write(&listed, KUBECONFIG).unwrap();
        let env = env_of(&[
            ("KUBECONFIG", listed.display().to_string()),
            ("HOME", "/nonexistent".into()),
        ]);
        let (_, source) = client_config(None, None, env).await.unwrap();
        assert_eq!(source, Source::Env(listed.display().to_string()));

        std::fs::create_dir(dir.path().join(".kube")).unwrap();
        std::fs::write(dir.path().join(".kube/config"), KUBECONFIG).unwrap();
        let env = env_of(&[("HOME", dir.path().display().to_string())]);
        let (_, source) = client_config(None, None, env).await.unwrap();
        assert_eq!(source, Source::Home(dir.path().join(".kube/config")));

        // Nothing at all: every place is named, and what to do.
        let e = client_config(None, None, env_of(&[("HOME", "/nonexistent".into())]))
            .await
            .unwrap_err();
        let text = e.to_string();
        for needle in [
            "KUBECONFIG",
            "/nonexistent/.kube/config",
            "KUBERNETES_SERVICE_HOST",
        ] {
            assert!(text.contains(needle), "{text}");
        }
    }

    #[tokio::test]
    async fn a_missing_or_broken_file_is_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = client_config(Some(&missing), None, env_of(&[]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("cannot be read"), "{e}");
        assert!(e.to_string().contains("nope"), "{e}");

        let no_server = dir.path().join("no-server");
        std::fs::write(
            &no_server,
            KUBECONFIG.replace(
                "    server: http://127.0.0.1:6443\n",
                "    insecure-skip-tls-verify: true\n",
            ),
        )
        .unwrap();
        let e = client_config(Some(&no_server), None, env_of(&[]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no `server` URL"), "{e}");
    }
}
