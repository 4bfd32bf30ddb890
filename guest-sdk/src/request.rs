//! The admission request a policy evaluates.

use serde::de::DeserializeOwned;

/// A Kubernetes group, version and kind (`""` is the core group).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupVersionKind {
    pub group: String,
    pub version: String,
    pub kind: String,
}

/// A Kubernetes group, version and resource (plural, as in the URL).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupVersionResource {
    pub group: String,
    pub version: String,
    pub resource: String,
}

/// The operation being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Operation {
    #[default]
    Create,
    Update,
    Delete,
    Connect,
}

/// The user who sent the request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: Vec<(String, Vec<String>)>,
}

/// One admission request.
///
/// Metadata is available as plain fields. The object, the old object and the
/// options stay JSON text until the policy asks for them, in the type it
/// chooses: a policy that only checks the kind never pays for parsing.
///
/// ```
/// # use palisade_sdk::{Request, Operation};
/// # let request = palisade_sdk::testing::RequestBuilder::new("", "v1", "Pod")
/// #     .object(serde_json::json!({"metadata": {"name": "web"}})).build();
/// #[derive(serde::Deserialize)]
/// struct Named { metadata: Metadata }
/// #[derive(serde::Deserialize)]
/// struct Metadata { name: String }
///
/// if request.operation != Operation::Delete {
///     let pod: Named = request.object()?.expect("CREATE carries an object");
///     assert_eq!(pod.metadata.name, "web");
/// }
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    pub uid: String,
    /// Kind of `object`.
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    pub sub_resource: Option<String>,
    /// Kind the user sent, when the API server converted it.
    pub request_kind: Option<GroupVersionKind>,
    pub request_resource: Option<GroupVersionResource>,
    pub request_sub_resource: Option<String>,
    pub name: Option<String>,
    /// None for cluster-scoped objects.
    pub namespace: Option<String>,
    pub operation: Operation,
    pub user_info: UserInfo,
    pub dry_run: bool,
    pub(crate) object: Option<String>,
    pub(crate) old_object: Option<String>,
    pub(crate) options: Option<String>,
}

impl Request {
    /// The new object, parsed as `T`; `None` on DELETE.
    pub fn object<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        parse(self.object.as_deref())
    }

    /// The existing object on UPDATE and DELETE, parsed as `T`.
    pub fn old_object<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        parse(self.old_object.as_deref())
    }

    /// The operation's options (`CreateOptions`...), parsed as `T`.
    pub fn options<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        parse(self.options.as_deref())
    }

    /// The new object as JSON text.
    pub fn raw_object(&self) -> Option<&str> {
        self.object.as_deref()
    }

    /// The existing object as JSON text.
    pub fn raw_old_object(&self) -> Option<&str> {
        self.old_object.as_deref()
    }
}

fn parse<T: DeserializeOwned>(text: Option<&str>) -> Result<Option<T>, serde_json::Error> {
    text.map(serde_json::from_str).transpose()
}
