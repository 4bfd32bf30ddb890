//! Leader election: with several controller replicas only the holder of a
//! `coordination.k8s.io` Lease reconciles; the others wait, ready to take
//! over within one lease duration.

use std::future::Future;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;

/// The Lease the replicas compete for.
pub const LEASE_NAME: &str = "palisade-controller";
/// Seconds a lease lasts without renewal.
const LEASE_SECONDS: u64 = 15;
/// Seconds before expiry the holder renews.
const GRACE_SECONDS: u64 = 5;

/// Why leadership ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The shutdown signal came: the lease is released for a fast handover.
    Shutdown,
    /// Another replica took the lease (this one could not renew in time).
    Lost,
}

/// Waits for the lease, then runs `work` until `shutdown` resolves or the
/// lease is lost. `work` receives a future that resolves when it must stop.
pub async fn run_as_leader<W, F>(
    client: Client,
    namespace: &str,
    identity: &str,
    shutdown: impl Future<Output = ()>,
    work: W,
) -> Result<Ended, kube_lease_manager::LeaseManagerError>
where
    W: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>) -> F,
    F: Future<Output = ()>,
{
    let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    tokio::pin!(shutdown);
    tracing::info!(identity, lease = LEASE_NAME, "waiting for leadership");
    let acquired = tokio::select! {
        result = leading.wait_for(|leader| *leader) => result.is_ok(),
        () = &mut shutdown => false,
    };
    if !acquired {
        drop(leading);
        let _ = task.await;
        return Ok(Ended::Shutdown);
    }
    tracing::info!(identity, "leading: reconciling");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stop_signal = Box::pin(async move {
        let _ = stopped.await;
    });
    let work = work(stop_signal);
    tokio::pin!(work);
    let mut lost_watch = leading.clone();
    let mut finished = false;
    let ended = tokio::select! {
        () = &mut work => {
            finished = true;
            Ended::Shutdown
        }
        () = &mut shutdown => Ended::Shutdown,
        _ = lost_watch.wait_for(|leader| !*leader) => Ended::Lost,
    };
    if !finished {
        let _ = stop.send(());
        work.await;
    }
    drop(lost_watch);
    // Closing the channel makes the lease task release the lease.
    drop(leading);
    let _ = task.await;
    if ended == Ended::Lost {
        tracing::warn!(identity, "leadership lost");
    }
    Ok(ended)
}
