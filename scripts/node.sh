#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, for the tests and
# for trying Palisade by hand:
#
#   scripts/node.sh up      start it (nothing happens if it is already up)
#   scripts/node.sh down    stop it and remove everything it made
#   scripts/node.sh status  say whether it is up
#   scripts/node.sh import TAR...  import OCI image-layout tars into its containerd
#
# Every daemon (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd, kubelet, a registry) runs inside one network
# namespace with no link to the host's network; its addresses are from the
# benchmarking range 198.18.0.0/15. The host reaches the API server and the
# registry through relays on its loopback (127.0.0.1:$NODE_API_PORT and
# :$NODE_REGISTRY_PORT), over unix sockets. Pods run for real: runc,
# containerd, CNI bridge, readiness probes; the API server calls webhook
# Services at their endpoints' pod IPs (aggregator routing), so no
# kube-proxy is needed. Some paths of a kubelet and containerd are fixed
# whatever their flags, hence one such node per machine: a lock says so.
#
# Needs root, the Debian packages of scripts/ensure-node-packages.sh and the
# binaries of scripts/ensure-kube.sh and scripts/ensure-go-tools.sh.
# Writes $NODE_DIR/kubeconfig (for the host) and $NODE_DIR/env.
set -euo pipefail

NETNS=palisade-node
NODE_NAME=palisade-node
NODE_IP=198.18.0.1
POD_CIDR=198.18.1.0/24
SERVICE_CIDR=198.18.2.0/24
SERVICE_IP=198.18.2.1
API_PORT=6443
REGISTRY_PORT=5000
NODE_API_PORT=${NODE_API_PORT:-16443}
NODE_REGISTRY_PORT=${NODE_REGISTRY_PORT:-15000}
PAUSE_IMAGE=localhost/palisade/pause:3.10

root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=${PALISADE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/palisade/bin}
dir=${NODE_DIR:-/var/lib/palisade-node}
lock=${NODE_LOCK:-/run/palisade-node.lock}
in_ns=(nsenter "--net=/run/netns/$NETNS")

log() { echo "node: $*" >&2; }
fail() { echo "node: $*" >&2; exit 1; }

# Starts a daemon in the background, its output in $dir/logs/NAME.log and
# its process id in $dir/pids/NAME (nsenter execs it: the id is the
# daemon's own).
start() {
  local name=$1
  shift
  # fd 9 is the lock: a daemon must not keep it.
  "$@" 9>&- </dev/null >"$dir/logs/$name.log" 2>&1 &
  echo $! >"$dir/pids/$name"
}

alive() { [ -f "$dir/pids/$1" ] && kill -0 "$(cat "$dir/pids/$1")" 2>/dev/null; }

# Waits for a command to succeed, at most $1 seconds; names what it waited
# for and shows the end of the log that explains it when it gives up.
wait_for() {
  local seconds=$1 what=$2 logname=$3
  shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$logname" ] && ! alive "$logname"; then
      tail -n 20 "$dir/logs/$logname.log" >&2 || true
      fail "$logname exited while waiting for $what"
    fi
    if [ $SECONDS -ge $deadline ]; then
      [ -n "$logname" ] && tail -n 20 "$dir/logs/$logname.log" >&2
      fail "gave up waiting for $what after ${seconds}s"
    fi
    sleep 0.2
  done
}

certificates() {
  local pki=$dir/pki
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=palisade-node-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  # name, subject, SANs (empty for a client certificate)
  issue() {
    local name=$1 subject=$2 sans=$3 ext
    ext=$(mktemp)
    if [ -n "$sans" ]; then
      printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$sans" >"$ext"
    else
      printf 'extendedKeyUsage=clientAuth\n' >"$ext"
    fi
    openssl req -newkey rsa:2048 -nodes -subj "$subject" -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 30 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
    rm -f "$ext" "$pki/$name.csr"
  }
  issue apiserver "/CN=kube-apiserver" \
    "IP:$NODE_IP,IP:$SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue kubelet-serving "/CN=$NODE_NAME" "IP:$NODE_IP,DNS:$NODE_NAME"
  issue admin "/O=system:masters/CN=admin" ""
  issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" ""
  issue controller-manager "/CN=system:kube-controller-manager" ""
  issue scheduler "/CN=system:kube-scheduler" ""
  issue kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" ""
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

# kubeconfig NAME SERVER [FILE]: a kubeconfig with NAME's client
# certificate, in FILE (default $dir/NAME.kubeconfig).
kubeconfig() {
  local name=$1 server=$2 file=${3:-$dir/$1.kubeconfig}
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: palisade-node
  cluster:
    server: $server
    certificate-authority: $dir/pki/ca.crt
users:
- name: $name
  user:
    client-certificate: $dir/pki/$name.crt
    client-key: $dir/pki/$name.key
contexts:
- name: palisade-node
  context: {cluster: palisade-node, user: $name}
current-context: palisade-node
EOF
}

network() {
  ip netns add "$NETNS"
  ip -n "$NETNS" link set lo up
  # This kernel has no dummy device: a bridge without ports holds the
  # node's address.
  ip -n "$NETNS" link add node0 type bridge
  ip -n "$NETNS" addr add "$NODE_IP/24" dev node0
  ip -n "$NETNS" link set node0 up
  ip -n "$NETNS" route add "$SERVICE_CIDR" dev node0
  "${in_ns[@]}" sysctl -q -w net.ipv4.ip_forward=1
  # Pods reach the API server through the `kubernetes` Service without
  # kube-proxy: one rule for its address.
  for chain in PREROUTING OUTPUT; do
    "${in_ns[@]}" iptables -t nat -A "$chain" -d "$SERVICE_IP/32" -p tcp --dport 443 \
      -j DNAT --to-destination "$NODE_IP:$API_PORT"
  done
  mkdir -p "$dir/cni/net.d"
  cat >"$dir/cni/net.d/10-palisade.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "palisade",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$dir/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

# A relay from the host's loopback to an address inside the namespace,
# through a unix socket (the two halves are in different namespaces).
relay() {
  local name=$1 host_port=$2 target=$3
  start "$name-inside" "${in_ns[@]}" socat "UNIX-LISTEN:$dir/$name.sock,fork,unlink-early" "TCP:$target"
  wait_for 10 "the $name relay's socket" "$name-inside" test -S "$dir/$name.sock"
  start "$name-host" socat "TCP-LISTEN:$host_port,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$dir/$name.sock"
}

containerd_up() {
  mkdir -p "$dir/containerd" "$dir/images"
  containerd config default >"$dir/containerd/config.toml.default"
  # Own root, state and socket; the local pause image; our CNI
  # configuration; and oom_score_adj left alone (the sandbox may not lower
  # it: runc would fail to start any pod).
  sed -e "s|^root = .*|root = \"$dir/containerd/root\"|" \
    -e "s|^state = .*|state = \"$dir/containerd/state\"|" \
    -e "/^\[grpc\]/,/^\[/ s|^  address = .*|  address = \"$dir/containerd/containerd.sock\"|" \
    -e "/^\[ttrpc\]/,/^\[/ s|^  address = .*|  address = \"$dir/containerd/containerd.sock.ttrpc\"|" \
    -e "s|sandbox_image = .*|sandbox_image = \"$PAUSE_IMAGE\"|" \
    -e "s|bin_dir = .*|bin_dir = \"/usr/lib/cni\"|" \
    -e "s|conf_dir = .*|conf_dir = \"$dir/cni/net.d\"|" \
    -e "s|restrict_oom_score_adj = .*|restrict_oom_score_adj = true|" \
    -e "s|config_path = \"\"|config_path = \"$dir/containerd/certs.d\"|" \
    "$dir/containerd/config.toml.default" >"$dir/containerd/config.toml"
  grep -q "restrict_oom_score_adj = true" "$dir/containerd/config.toml" \
    || fail "containerd's default configuration changed shape: restrict_oom_score_adj not set"
  # Images can also be pulled from the node's registry, over plain HTTP.
  mkdir -p "$dir/containerd/certs.d/$NODE_IP:$REGISTRY_PORT"
  cat >"$dir/containerd/certs.d/$NODE_IP:$REGISTRY_PORT/hosts.toml" <<EOF
server = "http://$NODE_IP:$REGISTRY_PORT"
[host."http://$NODE_IP:$REGISTRY_PORT"]
  capabilities = ["pull", "resolve"]
EOF
  start containerd "${in_ns[@]}" containerd --config "$dir/containerd/config.toml"
  wait_for 20 "containerd" containerd ctr --address "$dir/containerd/containerd.sock" version
  "$root/scripts/build-images.sh" "$bin_dir" "$dir/images" pause >/dev/null
  ctr --address "$dir/containerd/containerd.sock" -n k8s.io images import --no-unpack=false \
    "$dir/images/pause.oci.tar" >/dev/null
}

control_plane_up() {
  mkdir -p "$dir/etcd"
  start etcd "${in_ns[@]}" "$bin_dir/etcd" --name=node --data-dir="$dir/etcd" \
    --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
    --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
    --initial-cluster=node=http://127.0.0.1:2380 --log-level=error
  local pki=$dir/pki
  start kube-apiserver "${in_ns[@]}" "$bin_dir/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port="$API_PORT" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --allow-privileged=true \
    --enable-aggregator-routing=true \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP
  wait_for 60 "the API server" kube-apiserver \
    "${in_ns[@]}" curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://$NODE_IP:$API_PORT/readyz"
  kubeconfig controller-manager "https://$NODE_IP:$API_PORT"
  start kube-controller-manager "${in_ns[@]}" "$bin_dir/kube-controller-manager" \
    --kubeconfig="$dir/controller-manager.kubeconfig" \
    --root-ca-file="$pki/ca.crt" --service-account-private-key-file="$pki/sa.key" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --use-service-account-credentials=true --leader-elect=false --bind-address=127.0.0.1
  kubeconfig scheduler "https://$NODE_IP:$API_PORT"
  start kube-scheduler "${in_ns[@]}" "$bin_dir/kube-scheduler" \
    --kubeconfig="$dir/scheduler.kubeconfig" --leader-elect=false --bind-address=127.0.0.1
}

kubelet_up() {
  kubeconfig kubelet "https://$NODE_IP:$API_PORT"
  mkdir -p "$dir/kubelet" "$dir/pod-logs"
  echo "# no cluster DNS on this node" >"$dir/resolv.conf"
  cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $dir/pki/kubelet-serving.crt
tlsPrivateKeyFile: $dir/pki/kubelet-serving.key
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
containerRuntimeEndpoint: unix://$dir/containerd/containerd.sock
podLogsDir: $dir/pod-logs
resolvConf: $dir/resolv.conf
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
  start kubelet "${in_ns[@]}" "$bin_dir/kubelet" --config="$dir/kubelet.yaml" \
    --kubeconfig="$dir/kubelet.kubeconfig" --root-dir="$dir/kubelet" --cert-dir="$dir/kubelet/pki" \
    --node-ip="$NODE_IP" --hostname-override="$NODE_NAME"
  wait_for 60 "the node to be Ready" kubelet \
    "$bin_dir/kubectl" --kubeconfig="$dir/kubeconfig" wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
}

registry_up() {
  mkdir -p "$dir/registry"
  cat >"$dir/registry.yaml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $dir/registry}}
http: {addr: "$NODE_IP:$REGISTRY_PORT"}
EOF
  start registry "${in_ns[@]}" "$bin_dir/registry" serve "$dir/registry.yaml"
}

up() {
  [ "$(id -u)" = 0 ] || fail "the node needs root (network namespace, mounts, cgroups)"
  for program in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl pause registry; do
    [ -x "$bin_dir/$program" ] || fail "no $bin_dir/$program: run make go-tools"
  done
  for program in containerd runc socat iptables; do
    command -v "$program" >/dev/null || fail "no $program: run scripts/ensure-node-packages.sh"
  done
  if [ -f "$dir/up" ] && alive kubelet && alive kube-apiserver; then
    log "already up"
    return 0
  fi
  [ -e "/run/netns/$NETNS" ] && down
  local started=$SECONDS
  mkdir -p "$dir/logs" "$dir/pids"
  certificates
  network
  containerd_up
  log "containerd up, pause image imported ($((SECONDS - started))s)"
  control_plane_up
  relay apiserver "$NODE_API_PORT" "$NODE_IP:$API_PORT"
  # The host's kubeconfig talks to the relay; the certificate names 127.0.0.1.
  kubeconfig admin "https://127.0.0.1:$NODE_API_PORT" "$dir/kubeconfig"
  log "API server ready ($((SECONDS - started))s)"
  registry_up
  relay registry "$NODE_REGISTRY_PORT" "$NODE_IP:$REGISTRY_PORT"
  kubelet_up
  cat >"$dir/env" <<EOF
KUBECONFIG=$dir/kubeconfig
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
NODE_REGISTRY=$NODE_IP:$REGISTRY_PORT
NODE_REGISTRY_FROM_HOST=127.0.0.1:$NODE_REGISTRY_PORT
CONTAINERD_ADDRESS=$dir/containerd/containerd.sock
EOF
  # Who started it: the tests replace only a node a test left behind.
  echo "${NODE_OWNER:-hand}" >"$dir/owner"
  touch "$dir/up"
  log "Ready in $((SECONDS - started))s; KUBECONFIG=$dir/kubeconfig"
}

down() {
  local started=$SECONDS
  rm -f "$dir/up"
  # The kubelet first (it would restart containers), then the shims of our
  # own containerd, then the rest, each by the id recorded when it started.
  stop_pid() {
    local pid=$1
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  }
  [ -f "$dir/pids/kubelet" ] && stop_pid "$(cat "$dir/pids/kubelet")"
  local shim
  for shim in $(pgrep -f "containerd-shim.*-address $dir/containerd/containerd.sock" || true); do
    # A shim's children are the containers: end them with it.
    pkill -9 -P "$shim" 2>/dev/null || true
    kill -9 "$shim" 2>/dev/null || true
  done
  # The rest at once: TERM, and KILL what is still there after 5 s.
  local pids=()
  if [ -d "$dir/pids" ]; then
    for pidfile in "$dir"/pids/*; do
      [ -f "$pidfile" ] && pids+=("$(cat "$pidfile")")
    done
  fi
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "${pids[@]}" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "${pids[@]}" 2>/dev/null || true
  fi
  # Mounts made for pods (volumes, rootfs, sandbox namespaces), deepest first.
  local mount
  for mount in $(awk '{print $2}' /proc/mounts | grep -E "^($dir|/run/netns/cni-|/run/containerd/)" | sort -r); do
    umount -l "$mount" 2>/dev/null || true
  done
  for netns in /run/netns/cni-*; do
    [ -e "$netns" ] && ip netns delete "$(basename "$netns")" 2>/dev/null || true
  done
  ip netns delete "$NETNS" 2>/dev/null || true
  # Cgroups the kubelet and containerd made (only the empty ones can go).
  local cgroup
  for cgroup in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/k8s.io /sys/fs/cgroup/unified/kubepods; do
    [ -d "$cgroup" ] && find "$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -rf /var/lib/kubelet/device-plugins /var/log/containers /var/log/pods /var/lib/cni/results \
    /run/containerd/s /run/containerd/fifo /run/containerd/runc
  rmdir /var/lib/kubelet /var/lib/cni /run/containerd 2>/dev/null || true
  rm -rf "$dir"
  log "down ($((SECONDS - started))s)"
}

status() {
  if [ -f "$dir/up" ] && alive kubelet && alive kube-apiserver; then
    echo "up: KUBECONFIG=$dir/kubeconfig"
  else
    echo "down"
    return 1
  fi
}

import_images() {
  status >/dev/null || fail "the node is down"
  local tar
  for tar in "$@"; do
    ctr --address "$dir/containerd/containerd.sock" -n k8s.io images import "$tar"
  done
}

command=${1:-}
case "$command" in
  up | down)
    mkdir -p "$(dirname "$lock")"
    exec 9>"$lock"
    flock -w 300 9 || fail "another node command holds $lock"
    "$command"
    ;;
  status) status ;;
  import)
    shift
    import_images "$@"
    ;;
  *) fail "usage: node.sh up|down|status|import TAR..." ;;
esac
