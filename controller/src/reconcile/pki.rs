//! The engine's CA and the serving certificates it signs, kept current in
//! Secrets of the engine's namespace: for every PolicyServer and for the
//! controller's own admission webhook. Nothing comes from Helm, so a GitOps
//! tool rendering the chart without cluster access sees no churn.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use time::OffsetDateTime;

use super::{Context, Error, MANAGER};
use crate::certs::{self, Authority, Serving};
use crate::objects::ROOT_CA_SECRET;

/// A serving certificate's Secret: its name, the DNS names (or IPs) the
/// certificate carries, its labels and owner.
#[derive(Debug, Clone)]
pub struct ServingSecret {
    pub name: String,
    pub names: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub owner: Option<OwnerReference>,
}

/// The CA, created when missing and renewed before it expires (the old one
/// stays in the bundle while it is valid).
pub async fn ensure_authority(context: &Context, now: OffsetDateTime) -> Result<Authority, Error> {
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &context.namespace);
    let existing = secrets.get_opt(ROOT_CA_SECRET).await?;
    let current = existing.as_ref().and_then(Authority::from_secret);
    let wanted = certs::ensure_authority(current.as_ref(), now, &context.lifetimes)?;
    if current.as_ref() == Some(&wanted) {
        return Ok(wanted);
    }
    let data = wanted.secret_data();
    match existing {
        // Replace, not apply: the resourceVersion makes two controllers
        // racing to create or renew the CA end with one of them retrying.
        Some(mut secret) => {
            secret.data = Some(data);
            secrets
                .replace(ROOT_CA_SECRET, &PostParams::default(), &secret)
                .await?;
            tracing::info!("CA renewed; the previous CA stays trusted until it expires");
        }
        None => {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(ROOT_CA_SECRET.to_owned()),
                    namespace: Some(context.namespace.clone()),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..Secret::default()
            };
            secrets.create(&PostParams::default(), &secret).await?;
            tracing::info!("CA created");
        }
    }
    Ok(wanted)
}

/// The serving certificate in `wanted`'s Secret, issued again when missing,
/// expiring, signed by another CA or for other names.
pub async fn ensure_serving(
    context: &Context,
    ca: &Authority,
    wanted: &ServingSecret,
    now: OffsetDateTime,
) -> Result<Serving, Error> {
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &context.namespace);
    let existing = secrets.get_opt(&wanted.name).await?;
    let (current, issuer) = existing
        .as_ref()
        .map(Serving::from_secret)
        .unwrap_or_default();
    if let Some(current) = current.as_ref().filter(|current| {
        certs::serving_is_current(
            Some(current),
            issuer.as_deref(),
            ca,
            &wanted.names,
            now,
            &context.lifetimes,
        )
    }) {
        return Ok(current.clone());
    }
    let serving = certs::issue_serving(ca, &wanted.names, now, &context.lifetimes)?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(wanted.name.clone()),
            namespace: Some(context.namespace.clone()),
            labels: Some(wanted.labels.clone()),
            owner_references: wanted.owner.clone().map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(serving.secret_data(ca)),
        ..Secret::default()
    };
    secrets
        .patch(
            &wanted.name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    tracing::info!(secret = %wanted.name, names = ?wanted.names, "serving certificate issued");
    Ok(serving)
}
