//! The steps that stop and start the claim's consumers.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DeleteParams;

use super::{Ctx, Outcome};
use crate::migrate::access::consumers;
use crate::migrate::access::waits::await_listed;
use crate::migrate::model::error::api_err;
use crate::migrate::model::state::ConsumerKind;
use crate::migrate::model::templates::mounts;

impl Ctx<'_> {
    pub(super) async fn scale_down(&self) -> Outcome {
        let (client, state) = (self.client, self.state);
        if !state.is_rollback() {
            for switch in &state.switches {
                consumers::switch_to_recreate(client, &state.namespace, &switch.deployment).await?;
            }
        }
        for consumer in &state.consumers {
            consumers::scale(client, &state.namespace, consumer, 0).await?;
        }
        for cronjob in &state.cronjobs {
            consumers::suspend_cronjob(client, &state.namespace, cronjob, true).await?;
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), &state.namespace);
        for pod in &state.deleted_pods {
            match pods.delete(pod, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(api_err(format!("cannot delete pod {pod}"))(e)),
            }
        }
        let what = format!("no pod to mount {}", self.claim_name);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &state.namespace);
        await_listed(&pods, self.opts, &what, |pods| {
            !pods.iter().any(|p| mounts(p, &state.claim))
        })
        .await?;
        Ok(None)
    }

    pub(super) async fn scale_up(&self) -> Outcome {
        let (client, state) = (self.client, self.state);
        let mut any = false;
        if state.is_rollback() {
            // Every consumer Deployment `--switch-to-recreate` switched, recorded in the state
            // or not: the annotation on the Deployment is the record.
            for c in state
                .consumers
                .iter()
                .filter(|c| c.kind == ConsumerKind::Deployment)
            {
                any |= consumers::restore_strategy(client, &state.namespace, &c.name).await?;
            }
        }
        for consumer in &state.consumers {
            any |= consumers::scale(client, &state.namespace, consumer, consumer.replicas).await?;
        }
        for cronjob in &state.cronjobs {
            any |= consumers::suspend_cronjob(client, &state.namespace, cronjob, false).await?;
        }
        Ok((!any).then(|| "consumers already at their replica counts".to_owned()))
    }
}
