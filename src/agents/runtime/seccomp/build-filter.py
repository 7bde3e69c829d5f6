"""Writes the sandbox's seccomp program (classic BPF, as the kernel loads it) to stdout.

Input, on stdin: {"rules": [{"name", "errno", "arg": null | {"index", "op", "value", "mask"}}]},
as seccomp.ts parses denied-syscalls.list. Every rule denies one syscall with an errno,
always or when its one argument test matches; everything else is allowed. Only the
native architecture is in the filter: a syscall of any other (int 0x80 from a 64-bit
process, x32) kills the process, so no rule can be sidestepped through another ABI.

stderr: "note: ..." lines (a name skipped) and, on failure, one "error: ..." line.
Exit codes: 0 built, 3 python3-seccomp is not installed, 1 anything else.
Run with Debian's /usr/bin/python3 (package python3-seccomp).
"""

import json
import sys

try:
    import seccomp
except ImportError:
    print("error: python3-seccomp is not installed", file=sys.stderr)
    sys.exit(3)

OPS = {"eq": seccomp.EQ, "gt": seccomp.GT}


def arg_test(arg):
    if arg is None:
        return []
    if arg["op"] == "masked_eq":
        return [seccomp.Arg(arg["index"], seccomp.MASKED_EQ, arg["mask"], arg["value"])]
    return [seccomp.Arg(arg["index"], OPS[arg["op"]], arg["value"])]


def main():
    rules = json.load(sys.stdin)["rules"]
    program = seccomp.SyscallFilter(seccomp.ALLOW)
    program.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    skipped = set()
    for rule in rules:
        name = rule["name"]
        try:
            number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
        except ValueError:
            number = -1
        # Negative: unknown to this libseccomp, or no syscall on this architecture (vm86 on x86_64).
        if number < 0:
            if name not in skipped:
                print(f"note: {name} skipped (not a syscall here)", file=sys.stderr)
                skipped.add(name)
            continue
        program.add_rule(seccomp.ERRNO(rule["errno"]), name, *arg_test(rule["arg"]))
    program.export_bpf(sys.stdout)


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # one clean line for the caller; never a traceback with paths
        print(f"error: {type(error).__name__}: {error}"[:200], file=sys.stderr)
        sys.exit(1)
