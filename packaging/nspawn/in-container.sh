#!/bin/bash
# Runs inside the booted test container (see packaging/test-nspawn.sh):
# installs the kiln .deb from /kiln-deb, drives the service through systemd,
# D-Bus (with polkit) and the gRPC socket, then purges it. Each step prints
# "ok - ..." or "not ok - ..." to /results/steps.txt; the exit code is the
# number of failed steps (capped at 100).
set -u
export LC_ALL=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0

out=/results/steps.txt
: >"$out"
passed=0
failed=0
say() { echo "$*" | tee -a "$out"; }
ok() { say "ok - $*"; passed=$((passed + 1)); }
not_ok() { say "not ok - $*"; failed=$((failed + 1)); }
note() { while IFS= read -r line; do say "#   $line"; done; }
check() { # check "step" cmd...: ok when cmd exits 0; its output is shown on failure
    local step=$1 o
    shift
    if o=$("$@" 2>&1); then ok "$step"; else not_ok "$step"; printf '%s\n' "$o" | tail -n 20 | note; fi
}
wait_for() { # wait_for SECONDS cmd...
    local n=$(($1 * 5))
    shift
    while ((n-- > 0)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    "$@"
}

bus=(busctl --system --timeout=20 --allow-interactive-authorization=no)
name=org.kiln.Kiln1
obj=/org/kiln/Kiln1
mgr=org.kiln.Kiln1.Manager
sock=/run/kiln/kiln.sock
# The config key whose value `kilnctl status --json` reports as log_level.
log_section=${KILN_TEST_LOG_SECTION:-daemon}

main_pid() { systemctl show -P MainPID kilnd; }
json_log_level() { # log_level from kilnctl status --json, as a member of kiln
    runuser -u kmember -- kilnctl --socket "$sock" status --json 2>/dev/null |
        grep -o '"log_level"[[:space:]]*:[[:space:]]*"[a-z]*"' | head -n 1 | sed 's/.*"\([a-z]*\)"$/\1/'
}

say "# kiln package test in $(hostname), systemd $(systemctl --version | head -n 1 | awk '{print $2}')"
wait_for 60 systemctl is-active dbus.service >/dev/null

# 1. install
deb=$(ls /kiln-deb/kiln_*.deb 2>/dev/null | head -n 1)
if [[ -n $deb ]] && o=$(DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" 2>&1); then
    ok "dpkg -i $(basename "$deb")"
else
    not_ok "dpkg -i ${deb:-<no .deb in /kiln-deb>}"
    printf '%s\n' "${o:-}" | tail -n 30 | note
fi
check "user and group kiln exist" sh -c 'getent passwd kiln && getent group kiln'
check "postinst enabled kilnd" systemctl is-enabled kilnd

# 2. running under systemd
if wait_for 30 systemctl is-active kilnd; then
    ok "systemctl is-active kilnd"
else
    not_ok "systemctl is-active kilnd"
    systemctl status --no-pager kilnd 2>&1 | tail -n 20 | note
fi
check "kilnd runs as user kiln" sh -c '[ "$(stat -c %U /proc/$(systemctl show -P MainPID kilnd))" = kiln ]'
perm=$(stat -c '%a %G' "$sock" 2>/dev/null)
if [[ $perm == "660 kiln" ]]; then ok "socket $sock is 0660 group kiln"; else not_ok "socket $sock is 0660 group kiln (found: ${perm:-missing})"; fi

# 3. D-Bus: properties and a method call
pkg_version=$(dpkg-query -W -f '${Version}' kiln 2>/dev/null)
v=$("${bus[@]}" get-property "$name" "$obj" "$mgr" Version 2>&1)
if [[ $v == "s \"${pkg_version%%-*}"* ]]; then
    ok "busctl get-property Version = $v"
else
    not_ok "busctl get-property Version (got: $v, package ${pkg_version:-?})"
fi
state=$("${bus[@]}" get-property "$name" "$obj" "$mgr" State 2>&1)
if [[ $state == s\ \"* ]]; then ok "busctl get-property State = $state"; else not_ok "busctl get-property State ($state)"; fi
intro=$("${bus[@]}" call "$name" "$obj" org.freedesktop.DBus.Introspectable Introspect 2>&1)
if [[ $intro == *"$mgr"* && $intro == *Reload* ]]; then
    ok "busctl call Introspect lists $mgr.Reload"
else
    not_ok "busctl call Introspect"
    printf '%s\n' "$intro" | head -n 5 | note
fi

# 4. users: kmember is in group kiln, alice is not
useradd -m -s /bin/bash kmember -G kiln 2>/dev/null
useradd -m -s /bin/bash alice 2>/dev/null
check "kilnctl status over the socket as a member of kiln" \
    runuser -u kmember -- kilnctl --socket "$sock" status
if o=$(runuser -u alice -- kilnctl --socket "$sock" status 2>&1); then
    not_ok "non-member cannot use the socket (kilnctl status succeeded)"
else
    ok "non-member cannot use the socket"
fi
v=$(runuser -u alice -- "${bus[@]}" get-property "$name" "$obj" "$mgr" Version 2>&1)
if [[ $v == s\ * ]]; then ok "non-member reads Version over D-Bus"; else not_ok "non-member reads Version over D-Bus ($v)"; fi
pid_before=$(main_pid)
if o=$(runuser -u alice -- "${bus[@]}" call "$name" "$obj" "$mgr" Reload 2>&1); then
    not_ok "non-member Reload is denied by polkit (call succeeded)"
elif [[ $o == *"ServiceUnknown"* || $o == *"UnknownMethod"* || $o == *"not provided"* || $o == *"not reachable"* || $o == *"trusted callers"* ]]; then
    not_ok "non-member Reload is denied by polkit (wrong error: $o)"
else
    ok "non-member Reload is denied by polkit: $o"
fi
if o=$(runuser -u kmember -- "${bus[@]}" call "$name" "$obj" "$mgr" Reload 2>&1); then
    ok "member of kiln calls Reload"
else
    not_ok "member of kiln calls Reload: $o"
fi
wait_for 10 systemctl is-active kilnd >/dev/null
if [[ $pid_before != 0 && $(main_pid) == "$pid_before" ]]; then
    ok "Reload kept the same process"
else
    not_ok "Reload kept the same process (PID $pid_before -> $(main_pid))"
fi

# 5. systemctl reload applies a config change
before=$(json_log_level)
want=debug
[[ $before == debug ]] && want=warn
mkdir -p /etc/kiln/kiln.toml.d
printf '[%s]\nlog_level = "%s"\n' "$log_section" "$want" >/etc/kiln/kiln.toml.d/90-test.toml
pid_before=$(main_pid)
check "systemctl reload kilnd" systemctl reload kilnd
for _ in $(seq 50); do [[ $(json_log_level) == "$want" ]] && break; sleep 0.2; done
after=$(json_log_level)
if [[ -n $before && $after == "$want" && $pid_before != 0 && $(main_pid) == "$pid_before" ]]; then
    ok "reload applied log_level $before -> $after without a restart"
else
    not_ok "reload applied log_level (before '${before}', after '${after}', wanted '$want')"
fi

# 6. restart
check "systemctl restart kilnd" systemctl restart kilnd
if wait_for 30 systemctl is-active kilnd && [[ $(main_pid) != 0 && $(main_pid) != "$pid_before" ]]; then
    ok "kilnd active again with a new PID after restart"
else
    not_ok "kilnd active again after restart"
fi
check "socket serves after restart" wait_for 20 runuser -u kmember -- kilnctl --socket "$sock" status

# 7. reinstall (the upgrade path): restarts kilnd, keeps local config
pid_before=$(main_pid)
check "dpkg -i again (upgrade path)" env DEBIAN_FRONTEND=noninteractive dpkg -i "$deb"
if wait_for 30 systemctl is-active kilnd && [[ $(main_pid) != "$pid_before" ]] &&
    [[ -f /etc/kiln/kiln.toml.d/90-test.toml && $(json_log_level) == "$want" ]]; then
    ok "upgrade restarted kilnd and kept the local drop-in"
else
    not_ok "upgrade restarted kilnd and kept the local drop-in (log_level '$(json_log_level)')"
fi

# 8. purge leaves nothing behind
check "dpkg --purge kiln" env DEBIAN_FRONTEND=noninteractive dpkg --purge kiln
left=""
for p in /lib/systemd/system/kilnd.service /usr/lib/systemd/system/kilnd.service \
    /etc/systemd/system/multi-user.target.wants/kilnd.service /var/lib/kiln /var/log/kiln \
    /run/kiln /etc/kiln /usr/bin/kilnd /usr/share/dbus-1/system.d/org.kiln.Kiln1.conf; do
    [[ -e $p || -L $p ]] && left+=" $p"
done
[[ -z $left ]] && ok "purge removed unit, state, logs, config and socket" || not_ok "purge left:$left"
if systemctl cat kilnd >/dev/null 2>&1; then not_ok "systemd no longer knows kilnd.service"; else ok "systemd no longer knows kilnd.service"; fi
state=$(systemctl show -P ActiveState kilnd 2>/dev/null)
[[ $state == inactive ]] && ok "kilnd not running after purge" || not_ok "kilnd not running after purge ($state)"

journalctl -b --no-pager -u kilnd -u polkit -u dbus >/results/journal.txt 2>&1
say "$passed passed, $failed failed"
touch /results/done
exit $((failed > 100 ? 100 : failed))
