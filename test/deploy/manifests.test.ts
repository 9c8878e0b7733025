// The deployment manifests, checked offline: each parses, the Kubernetes objects validate
// against the API's JSON schemas (kubernetes-models), and each holds what the container tests
// measured and the service needs: Cloud Run gen2, probes on /readyz and /healthz, a request
// timeout above the wall-time limit, exactly the capabilities nsjail needs, never privileged.
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseAllDocuments } from 'yaml'
import { Deployment } from 'kubernetes-models/apps/v1/Deployment'
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet'
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler'
import { Container } from 'kubernetes-models/v1/Container'
import { Service } from 'kubernetes-models/v1/Service'
import { ConfigSchema } from '../../src/config.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

/**
 * What nsjail needs in a container, measured with Podman by dropping all capabilities and
 * adding sets back (test/container/run.sh checks it on every run): SYS_ADMIN for namespaces
 * and mounts, SETUID and SETGID to write the jail's uid and gid maps. Without any one of the
 * three the nsjail probe fails; nothing more is needed.
 */
const NSJAIL_CAPABILITIES = ['SETGID', 'SETUID', 'SYS_ADMIN']
/** The server's defaults that the manifests size against (src/config.ts). */
const WALL_MS = 10_000
const KILL_GRACE_MS = 500
const QUEUE_TIMEOUT_MS = 30_000
const MEMORY_MIB_PER_RUN = 512

type Json = Record<string, any>

function load (path: string): Json[] {
  const documents = parseAllDocuments(readFileSync(`${ROOT}/${path}`, 'utf8'))
  for (const document of documents) {
    if (document.errors.length > 0) throw new Error(`${path}: ${document.errors.map(e => e.message).join('; ')}`)
  }
  return documents.map(d => d.toJS() as Json)
}

function single (path: string): Json {
  const [document, ...rest] = load(path)
  if (document === undefined || rest.length > 0) throw new Error(`${path}: expected one YAML document`)
  return document
}

function envOf (container: Json): Record<string, string> {
  return Object.fromEntries((container.env ?? []).map((e: { name: string, value: string }) => [e.name, e.value]))
}

/** Every key path in `value` whose key is `key`. */
function findKey (value: unknown, key: string, path = ''): Array<{ path: string, value: unknown }> {
  if (value === null || typeof value !== 'object') return []
  return Object.entries(value).flatMap(([k, v]) => [
    ...(k === key ? [{ path: `${path}.${k}`, value: v }] : []),
    ...findKey(v, key, `${path}.${k}`)
  ])
}

/** Kubernetes quantities in bytes: 2Gi, 512Mi, 2G. */
function bytes (quantity: string): number {
  const match = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(quantity)
  if (match === null) throw new Error(`not a memory quantity: ${quantity}`)
  const units: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 }
  return Number(match[1]) * (match[2] === undefined ? 1 : units[match[2]] ?? NaN)
}

function cpus (quantity: string): number {
  return quantity.endsWith('m') ? Number(quantity.slice(0, -1)) / 1000 : Number(quantity)
}

const MANIFESTS = ['deploy/cloudrun/service.yaml', 'deploy/k8s/deployment.yaml', 'deploy/k8s/service.yaml', 'deploy/k8s/hpa.yaml', 'deploy/k8s/kustomization.yaml',
  'deploy/k8s/sessions/statefulset.yaml', 'deploy/k8s/sessions/services.yaml', 'deploy/k8s/sessions/kustomization.yaml']

t.test('every manifest parses as YAML', async t => {
  for (const path of MANIFESTS) t.doesNotThrow(() => load(path), path)
})

t.test('no manifest makes a container privileged', async t => {
  for (const path of MANIFESTS) {
    for (const found of findKey(load(path), 'privileged')) t.not(found.value, true, `${path}${found.path}`)
  }
})

t.test('every environment variable the manifests set is one the server knows', async t => {
  const known = new Set(Object.keys(ConfigSchema.properties))
  const containers = [
    ...single('deploy/cloudrun/service.yaml').spec.template.spec.containers,
    ...single('deploy/k8s/deployment.yaml').spec.template.spec.containers,
    ...single('deploy/k8s/sessions/statefulset.yaml').spec.template.spec.containers
  ]
  for (const container of containers) {
    for (const name of Object.keys(envOf(container))) t.ok(known.has(name), `${name} is a configuration variable`)
  }
})

t.test('Cloud Run: the Knative service', async t => {
  const service = single('deploy/cloudrun/service.yaml')
  t.equal(service.apiVersion, 'serving.knative.dev/v1')
  t.equal(service.kind, 'Service')
  const template = service.spec.template
  t.equal(template.metadata.annotations['run.googleapis.com/execution-environment'], 'gen2',
    'gen2: the first generation (gVisor) has no user namespaces for nsjail')
  t.equal(template.metadata.annotations['run.googleapis.com/sessionAffinity'], 'true',
    'session affinity: a client\'s calls go to the instance its cookie names, where its sessions live (best effort)')

  const [container, ...others] = template.spec.containers as Json[]
  t.equal(others.length, 0, 'one container')
  if (container === undefined) return
  t.doesNotThrow(() => new Container(container as ConstructorParameters<typeof Container>[0]).validate(), 'the container validates as a Kubernetes Container')
  t.match(container.image, /^REGION-docker\.pkg\.dev\/PROJECT\/pysandbox\/pysandbox:TAG$/, 'the image is a placeholder to fill in')
  const port = container.ports[0].containerPort
  t.equal(port, 8080)

  const env = envOf(container)
  t.equal(env.TRUST_PROXY, '1', 'behind Cloud Run\'s front end: one hop, the front end, appends the client to X-Forwarded-For')
  const concurrency = Number(env.CONCURRENCY)
  const queue = Number(env.QUEUE_SIZE)
  t.equal(template.spec.containerConcurrency, concurrency + queue, 'containerConcurrency = CONCURRENCY + QUEUE_SIZE')
  t.ok(cpus(container.resources.limits.cpu) >= concurrency, 'a vCPU per sandbox')
  t.ok(bytes(container.resources.limits.memory) >= concurrency * Number(env.LIMIT_MEMORY_MB ?? MEMORY_MIB_PER_RUN) * 2 ** 20 + 512 * 2 ** 20,
    'memory for every sandbox plus the server')

  const wallSeconds = Number(env.LIMIT_WALL_MS ?? WALL_MS) / 1000
  t.ok(template.spec.timeoutSeconds > wallSeconds, `the request timeout (${template.spec.timeoutSeconds} s) exceeds the wall-time limit (${wallSeconds} s)`)
  t.ok(template.spec.timeoutSeconds * 1000 >= QUEUE_TIMEOUT_MS + WALL_MS + KILL_GRACE_MS, 'and a queue wait plus a whole run')
  // Cloud Run kills an instance 10 s after SIGTERM: the grace, the kill grace and the close fit.
  t.ok(Number(env.SHUTDOWN_GRACE_MS) + KILL_GRACE_MS + 1000 <= 10_000, `SHUTDOWN_GRACE_MS (${env.SHUTDOWN_GRACE_MS}) fits Cloud Run's 10 s after SIGTERM`)

  t.equal(container.startupProbe.httpGet.path, '/readyz', 'the startup probe waits for a sandbox backend')
  t.equal(container.startupProbe.httpGet.port, port)
  t.ok(container.startupProbe.periodSeconds * container.startupProbe.failureThreshold <= 240, 'Cloud Run allows at most 240 s of startup probing')
  t.equal(container.livenessProbe.httpGet.path, '/healthz')
  t.equal(container.livenessProbe.httpGet.port, port)
})

t.test('Cloud Run: deploy.sh deploys the same settings', async t => {
  const script = readFileSync(`${ROOT}/deploy/cloudrun/deploy.sh`, 'utf8')
  const service = single('deploy/cloudrun/service.yaml')
  const container = service.spec.template.spec.containers[0]
  const env = envOf(container)
  const flag = (name: string): string | undefined => new RegExp(`^\\s*--${name} (\\S+)\\s*$`, 'm').exec(script)?.[1]
  t.equal(flag('execution-environment'), 'gen2')
  t.match(script, /--no-allow-unauthenticated/, 'private unless PUBLIC=1')
  t.match(script, /^\s*--session-affinity\s*$/m, 'session affinity, as the service\'s annotation')
  t.equal(flag('timeout'), String(service.spec.template.spec.timeoutSeconds))
  t.equal(flag('memory'), container.resources.limits.memory)
  t.equal(flag('port'), String(container.ports[0].containerPort))
  t.match(script, new RegExp(`^CPU=${container.resources.limits.cpu}$`, 'm'))
  t.match(script, new RegExp(`^CONCURRENCY=${env.CONCURRENCY}$`, 'm'))
  t.match(script, new RegExp(`^QUEUE_SIZE=${env.QUEUE_SIZE}$`, 'm'))
  t.match(script, new RegExp(`^SHUTDOWN_GRACE_MS=${env.SHUTDOWN_GRACE_MS}$`, 'm'))
  t.match(script, /SHUTDOWN_GRACE_MS=\$SHUTDOWN_GRACE_MS,/)
  t.match(script, /--concurrency \$\(\(CONCURRENCY \+ QUEUE_SIZE\)\)/)
  t.match(script, /TRUST_PROXY=1,/)
  t.match(script, /--startup-probe "httpGet\.path=\/readyz,/)
  t.match(script, /--liveness-probe "httpGet\.path=\/healthz,/)
})

t.test('Kubernetes: the objects validate against the API schemas', async t => {
  t.doesNotThrow(() => new Deployment(single('deploy/k8s/deployment.yaml')).validate(), 'Deployment')
  t.doesNotThrow(() => new Service(single('deploy/k8s/service.yaml')).validate(), 'Service')
  t.doesNotThrow(() => new HorizontalPodAutoscaler(single('deploy/k8s/hpa.yaml')).validate(), 'HorizontalPodAutoscaler')
  // The validator does reject a wrong shape (it is not vacuous):
  const broken = single('deploy/k8s/deployment.yaml')
  broken.spec.template.spec.containers[0].securityContext.capabilities.add = 'SYS_ADMIN'
  t.throws(() => new Deployment(broken).validate(), 'a capability list that is not a list is refused')
})

t.test('Kubernetes: the Deployment grants exactly what nsjail needs', async t => {
  const deployment = single('deploy/k8s/deployment.yaml')
  const pod = deployment.spec.template.spec
  const [container] = pod.containers as Json[]
  if (container === undefined) return t.fail('no container')
  const security = container.securityContext
  t.same(security.capabilities.drop, ['ALL'], 'every capability dropped')
  t.same([...security.capabilities.add].sort(), NSJAIL_CAPABILITIES, 'and exactly SYS_ADMIN, SETUID, SETGID added back')
  t.equal(security.runAsUser, 0, 'root in the container: nsjail builds each jail, then drops to 65534')
  t.not(security.privileged, true)
  t.not(security.allowPrivilegeEscalation, false, 'Kubernetes refuses allowPrivilegeEscalation: false with SYS_ADMIN')
  t.equal(security.procMount, 'Unmasked', 'nsjail mounts a new /proc (Podman: systempaths=unconfined)')
  t.equal(pod.hostUsers, false, 'Unmasked /proc needs the pod\'s own user namespace')
  t.equal(security.readOnlyRootFilesystem, true, 'nsjail needs no writable root (measured)')
  t.not(security.seccompProfile?.type, 'Unconfined')
  t.not(pod.securityContext?.seccompProfile?.type, 'Unconfined')
  t.equal(pod.automountServiceAccountToken, false, 'no API token for a service that runs untrusted code')

  const env = envOf(container)
  const concurrency = Number(env.CONCURRENCY)
  t.ok(Number(env.SANDBOX_UID_BASE) + concurrency - 1 < 65536,
    'every slot\'s outside uid exists in the pod\'s user namespace (0-65535)')
  t.ok(bytes(container.resources.limits.memory) >= concurrency * MEMORY_MIB_PER_RUN * 2 ** 20, 'memory for every sandbox')
  // preStop, then SIGTERM: the shutdown's grace, the kill grace and the close (server.ts: 5 s at most).
  const preStopS = Number(container.lifecycle.preStop.exec.command[1])
  t.same(container.lifecycle.preStop.exec.command, ['sleep', String(preStopS)], 'preStop: the endpoints stop sending before SIGTERM')
  t.ok(Number(env.SHUTDOWN_GRACE_MS) >= WALL_MS + KILL_GRACE_MS, 'a default run can end within the shutdown\'s grace')
  t.ok(pod.terminationGracePeriodSeconds * 1000 >= preStopS * 1000 + Number(env.SHUTDOWN_GRACE_MS) + KILL_GRACE_MS + 5000, 'and all of it within terminationGracePeriodSeconds')

  const ports = Object.fromEntries((container.ports as Json[]).map(p => [p.name, p.containerPort]))
  t.equal(ports.http, 8080)
  t.equal(container.startupProbe.httpGet.path, '/readyz')
  t.equal(container.readinessProbe.httpGet.path, '/readyz')
  t.equal(container.livenessProbe.httpGet.path, '/healthz')
  for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    t.ok(container[probe].httpGet.port in ports || Object.values(ports).includes(container[probe].httpGet.port), `${probe} targets the container's port`)
  }
})

t.test('Kubernetes: Service and autoscaler point at the Deployment', async t => {
  const deployment = single('deploy/k8s/deployment.yaml')
  const service = single('deploy/k8s/service.yaml')
  const hpa = single('deploy/k8s/hpa.yaml')
  const labels = deployment.spec.template.metadata.labels
  t.same(deployment.spec.selector.matchLabels, labels, 'the Deployment selects its own pods')
  for (const [key, value] of Object.entries(service.spec.selector)) t.equal(labels[key], value, `the Service selects ${key}=${String(value)}`)
  const portNames = deployment.spec.template.spec.containers[0].ports.map((p: Json) => p.name)
  for (const port of service.spec.ports) t.ok(portNames.includes(port.targetPort), `targetPort ${String(port.targetPort)} is a container port`)
  t.same(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: deployment.metadata.name })
  t.ok(hpa.spec.minReplicas <= hpa.spec.maxReplicas)
  t.ok(deployment.spec.template.spec.containers[0].resources.requests.cpu !== undefined, 'CPU utilization needs a CPU request')

  const kustomization = single('deploy/k8s/kustomization.yaml')
  for (const resource of kustomization.resources) t.ok(existsSync(`${ROOT}/deploy/k8s/${String(resource)}`), `${String(resource)} exists`)
})

t.test('Kubernetes, sessions: a StatefulSet of the Deployment\'s pods, each its own instance with a DNS name', async t => {
  const deployment = single('deploy/k8s/deployment.yaml')
  const statefulSet = single('deploy/k8s/sessions/statefulset.yaml')
  const services = load('deploy/k8s/sessions/services.yaml')
  t.doesNotThrow(() => new StatefulSet(statefulSet).validate(), 'StatefulSet')
  for (const service of services) t.doesNotThrow(() => new Service(service).validate(), `Service ${String(service.metadata.name)}`)

  // The same pods: every setting the Deployment's tests check holds here too. Only TRUST_PROXY
  // differs: a proxy is always in front of these pods (it routes sessions).
  const withoutTrustProxy = (template: Json): Json => {
    const copy = structuredClone(template)
    for (const container of copy.spec.containers) container.env = container.env.filter((e: Json) => e.name !== 'TRUST_PROXY')
    return copy
  }
  t.same(withoutTrustProxy(statefulSet.spec.template), withoutTrustProxy(deployment.spec.template), 'the pod template is the Deployment\'s')
  t.equal(envOf(statefulSet.spec.template.spec.containers[0]).TRUST_PROXY, '1', 'the proxy in front is the one hop to believe')

  for (const workload of [deployment, statefulSet]) {
    const instanceId = (workload.spec.template.spec.containers[0].env as Json[]).find(e => e.name === 'INSTANCE_ID')
    t.same(instanceId?.valueFrom, { fieldRef: { fieldPath: 'metadata.name' } }, `${String(workload.kind)}: INSTANCE_ID is the pod's name`)
  }
  // A StatefulSet's pod is named <name>-<ordinal>: a valid INSTANCE_ID for any replica count.
  t.match(`${String(statefulSet.metadata.name)}-${statefulSet.spec.replicas - 1}`, new RegExp(ConfigSchema.properties.INSTANCE_ID.pattern ?? 'no pattern'), 'the last pod\'s name is a valid INSTANCE_ID')

  const headless = services.find(service => service.metadata.name === statefulSet.spec.serviceName)
  t.equal(headless?.spec.clusterIP, 'None', 'serviceName is a headless Service: a DNS name per pod')
  const labels = statefulSet.spec.template.metadata.labels
  for (const service of services) {
    for (const [key, value] of Object.entries(service.spec.selector)) t.equal(labels[key], value, `${String(service.metadata.name)} selects ${key}=${String(value)}`)
  }
  t.same(services.find(service => service.metadata.name !== statefulSet.spec.serviceName), single('deploy/k8s/service.yaml'), 'and the other is deploy/k8s\'s Service')

  const kustomization = single('deploy/k8s/sessions/kustomization.yaml')
  for (const resource of kustomization.resources) t.ok(existsSync(`${ROOT}/deploy/k8s/sessions/${String(resource)}`), `${String(resource)} exists`)
  t.same(kustomization.images, single('deploy/k8s/kustomization.yaml').images, 'the same image placeholder as deploy/k8s')
})
