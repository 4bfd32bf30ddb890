//! Lists served from watches: the first `list_resources` of a resource type
//! (with given selectors) starts a reflector on the server's runtime, and
//! every later list of it is answered from the reflector's store, without an
//! API request. A context-aware policy then costs the API server one watch,
//! not one list per admission request.
//!
//! The selectors are part of the watch (the API server filters), so the
//! answers select exactly what an uncached list would; the namespace is
//! filtered here, from one cluster-wide watch per type. Items come sorted by
//! namespace and name, as the API server lists them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::core::DynamicObject;
use kube::discovery::ApiResource;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::bindings::HostError;

/// Most watches one server keeps. A policy that builds its selectors from
/// request data would otherwise start one per request; past this, lists
/// go to the API server uncached.
const MAX_WATCHES: usize = 64;

/// What one watch covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct WatchKey {
    pub api_version: String,
    pub kind: String,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
}

/// One running watch and the store it fills.
struct Watch {
    store: Store<DynamicObject>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Whether the first full list is in the store (kube swaps later
    /// re-lists in whole, so a ready store stays complete).
    fn is_ready(&self) -> bool {
        matches!(self.store.wait_until_ready().now_or_never(), Some(Ok(())))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every watch of one server, stopped when it is dropped.
#[derive(Default)]
pub(super) struct Watches {
    watches: Mutex<HashMap<WatchKey, Arc<Watch>>>,
}

impl Watches {
    /// The list `key` selects in `namespace` (all namespaces when none), as
    /// the JSON of a Kubernetes List, if a ready watch holds it. Starts the
    /// watch on first use and waits for it up to `first_wait`. `None` when
    /// the API server must answer instead: too many watches already, or the
    /// watch has not delivered its first list (just started, or failing:
    /// RBAC without `watch`, an API server away).
    pub(super) fn list(
        &self,
        key: &WatchKey,
        resource: &ApiResource,
        client: &kube::Client,
        runtime: &tokio::runtime::Handle,
        namespace: Option<&str>,
        first_wait: Duration,
    ) -> Option<Result<String, HostError>> {
        let watch = {
            let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
            match watches.get(key) {
                Some(watch) => watch.clone(),
                None if watches.len() >= MAX_WATCHES => return None,
                None => {
                    let watch = Arc::new(start(key, resource, client, runtime));
                    watches.insert(key.clone(), watch.clone());
                    drop(watches);
                    let store = watch.store.clone();
                    let waited =
                        super::wait_for(runtime, first_wait, "Kubernetes watch", async move {
                            store.wait_until_ready().await
                        });
                    if waited.is_err() {
                        tracing::warn!(api_version = %key.api_version, kind = %key.kind, "the watch did not list within {} s; answering from the API server meanwhile", first_wait.as_secs_f32());
                    }
                    watch
                }
            }
        };
        if !watch.is_ready() {
            return None;
        }
        let mut items: Vec<Arc<DynamicObject>> = watch
            .store
            .state()
            .into_iter()
            .filter(|o| namespace.is_none() || o.metadata.namespace.as_deref() == namespace)
            .collect();
        items.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let list = List {
            api_version: &key.api_version,
            kind: format!("{}List", key.kind),
            metadata: serde_json::Map::new(),
            items: items.iter().map(|o| Item(o)).collect(),
        };
        Some(serde_json::to_string(&list).map_err(|e| HostError::Failed(e.to_string())))
    }
}

/// Starts the reflector of `key` on `runtime`.
fn start(
    key: &WatchKey,
    resource: &ApiResource,
    client: &kube::Client,
    runtime: &tokio::runtime::Handle,
) -> Watch {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
    let mut config = watcher::Config::default();
    if let Some(labels) = &key.label_selector {
        config = config.labels(labels);
    }
    if let Some(fields) = &key.field_selector {
        config = config.fields(fields);
    }
    let writer = reflector::store::Writer::new(resource.clone());
    let store = writer.as_reader();
    let what = format!("{} {}", key.api_version, key.kind);
    tracing::info!(resource = %what, labels = ?key.label_selector, fields = ?key.field_selector, "watching for context-aware policies");
    let events = reflector::reflector(writer, watcher(api, config).default_backoff());
    let task = runtime.spawn(events.for_each(move |event| {
        if let Err(e) = event {
            tracing::warn!(resource = %what, error = %e, "watch failed; retrying");
        }
        std::future::ready(())
    }));
    Watch { store, task }
}

/// A Kubernetes List, as the API server writes it.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct List<'a> {
    api_version: &'a str,
    kind: String,
    /// The list's own metadata; a cached list has no resource version.
    metadata: serde_json::Map<String, serde_json::Value>,
    items: Vec<Item<'a>>,
}

/// An object as a List item: without `apiVersion` and `kind`, which the API
/// server leaves out of list items (watch events carry them).
struct Item<'a>(&'a DynamicObject);

impl Serialize for Item<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = self.0.data.as_object();
        let mut map = serializer.serialize_map(Some(1 + fields.map_or(0, |f| f.len())))?;
        map.serialize_entry("metadata", &self.0.metadata)?;
        for (name, value) in fields.into_iter().flatten() {
            if name != "apiVersion" && name != "kind" && name != "metadata" {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}
