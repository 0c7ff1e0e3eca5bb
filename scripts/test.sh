#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine (or a developer's):
#  1. installs the real programs the tests drive (OpenSSH client and server, sftp-server,
#     rsync, tmux, curl, python3) when they are missing;
#  2. makes sure a PostgreSQL server is reachable for the store suite: the one named by
#     WG_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/test), else a private
#     throw-away server started here (installing the Debian package first if needed);
#  3. creates the unprivileged local account `wgtest` that tests log in as on the sshd target
#     when a root login would not do (sshd refuses "signal" requests of root sessions);
#  4. runs `cargo test --workspace`.
# Extra arguments go to cargo test (e.g. scripts/test.sh -p wg-store).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

pkgs=()
[ -x /usr/sbin/sshd ] || pkgs+=(openssh-server)
command -v ssh >/dev/null 2>&1 || pkgs+=(openssh-client)
[ -x /usr/lib/openssh/sftp-server ] || pkgs+=(openssh-sftp-server)
for tool in rsync tmux curl python3 ss:iproute2 pgrep:procps; do
  cmd=${tool%%:*}; pkg=${tool#*:}
  command -v "$cmd" >/dev/null 2>&1 || pkgs+=("$pkg")
done
if ((${#pkgs[@]})); then
  echo "test.sh: installing ${pkgs[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

if ! id wgtest >/dev/null 2>&1; then
  echo "test.sh: creating the local account wgtest (an unprivileged sshd target account)"
  # '*': no password, but not locked ('!'), which sshd refuses without PAM.
  as_root useradd --create-home --shell /bin/bash --password '*' wgtest
fi

export WG_TEST_PG_URL="${WG_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
pg_ok() { command -v psql >/dev/null 2>&1 && psql "$WG_TEST_PG_URL" -qAtc 'select 1' >/dev/null 2>&1; }
if ! pg_ok; then
  echo "test.sh: no PostgreSQL at $WG_TEST_PG_URL; starting a private one"
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  if [ -z "$pgbin" ]; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
    pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  fi
  pgdir=$(mktemp -d /tmp/wg-pg.XXXXXX)
  runas=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$pgdir"
    runas=(runuser -u postgres --)
  fi
  "${runas[@]}" "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth=trust >/dev/null
  port=55432
  "${runas[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
    -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1" start >/dev/null
  trap '"${runas[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -m fast stop >/dev/null 2>&1 || true' EXIT
  "${runas[@]}" "$pgbin/createdb" -h 127.0.0.1 -p "$port" -U postgres test
  export WG_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/test"
fi

cargo test --workspace "$@"
