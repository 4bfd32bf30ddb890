//! The webhook configurations of policies in the API: one place for the
//! calls both reconcilers make. Their content is built in [`crate::webhook`].

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::Client;

use super::{delete_if_present, Error, MANAGER};
use crate::webhook::{WebhookConfiguration, POLICY_SERVER_LABEL};

/// Both kinds of webhook configuration, cluster-wide.
#[derive(Clone)]
pub struct Webhooks {
    validating: Api<ValidatingWebhookConfiguration>,
    mutating: Api<MutatingWebhookConfiguration>,
}

impl Webhooks {
    pub fn new(client: &Client) -> Self {
        Self {
            validating: Api::all(client.clone()),
            mutating: Api::all(client.clone()),
        }
    }

    /// Whether a configuration of either kind is registered under `id`.
    pub async fn registered(&self, id: &str) -> Result<bool, Error> {
        Ok(self.validating.get_opt(id).await?.is_some()
            || self.mutating.get_opt(id).await?.is_some())
    }

    /// Applies the configuration (reverting any drift) and removes one of
    /// the other kind left from before the policy's `mutating` changed.
    pub async fn apply(&self, id: &str, configuration: &WebhookConfiguration) -> Result<(), Error> {
        let params = PatchParams::apply(MANAGER).force();
        match configuration {
            WebhookConfiguration::Validating(config) => {
                self.validating
                    .patch(id, &params, &Patch::Apply(config))
                    .await?;
                delete_if_present(self.mutating.clone(), id).await
            }
            WebhookConfiguration::Mutating(config) => {
                self.mutating
                    .patch(id, &params, &Patch::Apply(config))
                    .await?;
                delete_if_present(self.validating.clone(), id).await
            }
        }
    }

    /// Removes the configuration registered under `id`, of either kind.
    pub async fn remove(&self, id: &str) -> Result<(), Error> {
        delete_if_present(self.validating.clone(), id).await?;
        delete_if_present(self.mutating.clone(), id).await
    }

    /// Removes every configuration of the policies of one PolicyServer;
    /// returns how many went.
    pub async fn remove_for_server(&self, policy_server: &str) -> Result<usize, Error> {
        let list = ListParams::default().labels(&format!("{POLICY_SERVER_LABEL}={policy_server}"));
        Ok(delete_all(&self.validating, &list).await? + delete_all(&self.mutating, &list).await?)
    }
}

async fn delete_all<K>(api: &Api<K>, list: &ListParams) -> Result<usize, Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .delete_collection(&DeleteParams::default(), list)
        .await?
        .left()
        .map_or(0, |l| l.items.len()))
}
