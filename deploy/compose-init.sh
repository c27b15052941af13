#!/bin/sh
# One-shot genesis of the compose swarm (deploy/docker-compose.yml, service "init").
#
# The committee's peer ids must be in every node's config (consensus.validators) before any
# daemon starts, so the keys of the bootstrap node and of the four validators are made here,
# in their volumes, and their configs written; trainers (a scaled service, one anonymous volume
# each) copy /genesis/node.toml on their first start and make their own key. The private-network
# key goes to /genesis/swarm.key: $SWARM_KEY (64 hex characters) when given, else a new random
# one. Run again, it changes nothing (keys and configs are kept) and prints the same summary.
#
# It runs as root only because Docker creates the mount points /vol/* root-owned: everything
# it writes is handed to the image's p2pnode user at the end, and the daemons never run as root.
set -eu
umask 077
LISTEN=/ip4/0.0.0.0/tcp/4001
NODES="bootstrap validator-1 validator-2 validator-3 validator-4"
G=/genesis
owner=$(id -u p2pnode):$(id -g p2pnode)

peer_id() { # the peer id of the node in data dir $1 (its key and config made if missing)
    p2pnode --data-dir "$1" init --listen "$LISTEN" | sed -n 's/^peer id //p'
}

if [ -s "$G/node.toml" ]; then
    echo "genesis already made: keeping it"
else
    if [ ! -s "$G/swarm.key" ]; then
        if [ -n "${SWARM_KEY:-}" ]; then
            printf '%s\n' "$SWARM_KEY" >"$G/swarm.key"
        else
            python3 -c 'import secrets; print(secrets.token_hex(32))' >"$G/swarm.key"
        fi
    fi
    # The five keys at once (each p2pnode start costs a second or two of CPU).
    ids=$(mktemp -d)
    for n in $NODES; do
        (peer_id "/vol/$n" >"$ids/$n") &
    done
    wait
    for n in $NODES; do
        [ -s "$ids/$n" ] || { echo "compose-init: no key made in /vol/$n" >&2; exit 1; }
    done
    boot=/dns4/bootstrap/tcp/4001/p2p/$(cat "$ids/bootstrap")
    validators=$(cat "$ids/validator-1" "$ids/validator-2" "$ids/validator-3" "$ids/validator-4")
    # shellcheck disable=SC2086  # one line, one space between the ids
    validators=$(echo $validators)
    rm -rf "$ids"
    # Each `config set` is checked like start-up is: a bad key or value stops here. Every node
    # but the bootstrap node has the same settings, so validator-1's file is copied to the rest.
    common() { # the settings every node has, in data dir $1
        p2pnode --data-dir "$1" config set psk_file "$G/swarm.key" >/dev/null
        # shellcheck disable=SC2086  # one peer id per word
        p2pnode --data-dir "$1" config set consensus.validators $validators >/dev/null
    }
    common /vol/bootstrap &
    first=$!
    {
        common /vol/validator-1
        p2pnode --data-dir /vol/validator-1 config set bootstrap "$boot" >/dev/null
    } &
    second=$!
    wait "$first"
    wait "$second"
    for n in validator-2 validator-3 validator-4; do
        cp /vol/validator-1/config.toml "/vol/$n/config.toml"
    done
    printf "BOOTSTRAP='%s'\nVALIDATORS='%s'\n" "$boot" "$validators" >"$G/genesis.env"
    # The trainers' config (each trainer makes its own key); written last: it marks genesis done.
    cp /vol/validator-1/config.toml "$G/node.toml.tmp"
    mv "$G/node.toml.tmp" "$G/node.toml"
fi

for d in /vol/* "$G"; do
    chown -R "$owner" "$d"
    chmod 0700 "$d"
done
# shellcheck disable=SC1091
. "$G/genesis.env"
echo "bootstrap  $BOOTSTRAP"
echo "committee  $VALIDATORS"
echo "psk        $G/swarm.key (in the genesis volume: back it up with the validators' keys)"
