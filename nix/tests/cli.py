# Helpers shared by the NixOS VM tests (prepended to each testScript; PORT is defined before).
# They drive Blixard only through its CLI, as an operator would: `blixard ... --json` on reads.
import json


DATA_DIR = "/var/lib/blixard"  # the module's default services.blixard.dataDir


def cli(machine, args, addr=None):
    """Run `blixard ARGS` on `machine` against `addr` (default: the machine's own node).

    The address is the machine's name, not loopback, so the CLI does not guess where the node's
    files are: `--data-dir` gives it the node's admin token (`api-token`) and the cluster CA
    (`tls/ca.crt`) that the node's HTTPS certificate chains to. That admin token is valid on this
    machine's node only, so `addr` must name it (or be given with a replicated token instead).
    """
    target = addr or f"{machine.name}:{PORT}"
    return machine.succeed(f"BLIXARD_ADDR={target} blixard --data-dir {DATA_DIR} {args}")


def cli_json(machine, args, addr=None):
    return json.loads(cli(machine, f"{args} --json", addr))


def pick(value, *paths):
    """The first of several dotted paths present in a JSON document, else None."""
    for path in paths:
        v = value
        for key in path.split("."):
            if isinstance(v, dict) and key in v:
                v = v[key]
            else:
                break
        else:
            return v
    return None


def leader(machine):
    """The leader's node id as `machine` sees it, or None."""
    status = cli_json(machine, "cluster status")
    found = pick(status, "leader")
    return found if isinstance(found, int) else None


def health(machine):
    """{node id: "up" | "down"} from `node list` (the registered nodes, as the leader judges them)."""
    return {n["id"]: n["health"] for n in cli_json(machine, "node list")}


def vms(machine):
    """{VM name: record} from `vm list`."""
    return {r["spec"]["name"]: r for r in cli_json(machine, "vm list")}


def vm(machine, name):
    """The hosting node, observed phase and desired state of one VM, from `vm status`."""
    record = cli_json(machine, f"vm status {name}")
    return {"node": record.get("node"), "phase": record["status"]["phase"], "desired": record["desired"]}


def eventually(condition, timeout):
    """Wait until `condition()` holds; a failing CLI call (no leader yet, node away) counts as no."""

    def attempt(last_try):
        try:
            return bool(condition())
        except Exception as error:
            if last_try:
                print(f"last attempt failed: {error}")
            return False

    retry(attempt, timeout=timeout)
