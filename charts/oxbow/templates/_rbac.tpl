{{/* What the operator does to StreamJobs and their children: exactly the calls it makes, no
wildcards. Used by the ClusterRole (every namespace) or by a Role in each watched namespace. */}}
{{- define "oxbow.operatorRules" -}}
# Watches StreamJobs; adds and removes its finalizer (oxbow.dev/final-savepoint).
- apiGroups: [oxbow.dev]
  resources: [streamjobs]
  verbs: [list, watch, patch]
# Writes the status (phase, conditions, checkpoint, savepoint, lag).
- apiGroups: [oxbow.dev]
  resources: [streamjobs/status]
  verbs: [patch]
# Children carry an owner reference with blockOwnerDeletion, which needs this where the
# OwnerReferencesPermissionEnforcement admission plugin runs (OpenShift, hardened clusters).
- apiGroups: [oxbow.dev]
  resources: [streamjobs/finalizers]
  verbs: [update]
# The workers' StatefulSet: read, watched, applied server-side, scaled to zero for a stop.
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch, create, patch]
# The job's ConfigMap (job file and assignment the workers mount).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch]
# The job's admin Secret (the token of the workers' admin API).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch]
# The workers' headless Service.
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create, patch]
# Worker pods: listed for readiness, read for their address, deleted to roll out a new
# generation (the StatefulSet's update strategy is OnDelete).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, delete]
# The workers' PodDisruptionBudget (policy/v1, Kubernetes 1.21 and later).
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch]
# Events on StreamJobs (Deploying, Running, InvalidSpec, ...); a repeated one is patched.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
