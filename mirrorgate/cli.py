"""`mirrorgate [mitmdump options…]`: mitmdump with Mirrorgate's addons loaded.

The addons are added to the master before the command line is parsed, so their options
(`--set rules=…`, `--set profile=…`) are validated like mitmproxy's own and a bad rules
file stops start-up with a one-line message.
"""

from __future__ import annotations

import sys

from mitmproxy.tools import cmdline
from mitmproxy.tools.dump import DumpMaster
from mitmproxy.tools.main import run

from addons import Mirrorgate, default_addons
from addons.gate import Gate
from addons.options import DECLARED


class MirrorgateMaster(DumpMaster):
    def __init__(self, options, **kwargs) -> None:
        super().__init__(options, **kwargs)
        # The gate decides before mitmproxy's proxyauth (and every later addon) sees a
        # request: a client outside the allowlist is refused without a credential check,
        # and proxyauth finds the credentials already verified off the event loop.
        chain = self.addons.chain
        pa = self.addons.get("proxyauth")
        chain.insert(chain.index(pa) if pa in chain else 0, self.addons.register(Gate()))
        self.addons.add(Mirrorgate(default_addons()))
        # Defaults that the command line may still override: the access log replaces
        # mitmdump's per-flow lines, which would show relay hand-overs, not requests.
        # Decrypted connections go to rule hosts, which speak HTTP: a request that does
        # not look like HTTP at a glance (an odd method, a first line longer than one
        # TLS record) must meet the router, not be tunnelled raw to the origin.
        options.update(flow_detail=0, connection_strategy="lazy", rawtcp=False)


def _extra(args) -> dict:
    # Mirrorgate's options are set once more (addons/options.py), inside mitmproxy's
    # option error handling: a bad value, default or given, stops start-up with one line.
    from mitmproxy import ctx

    out = {name: getattr(ctx.options, name) for name in DECLARED}
    if args.filter_args:
        v = " ".join(args.filter_args)
        out.update(save_stream_filter=v, readfile_filter=v, dumper_filter=v)
    return out


def main(argv: list[str] | None = None) -> None:
    sys.argv[0] = "mirrorgate"
    run(MirrorgateMaster, cmdline.mitmdump, sys.argv[1:] if argv is None else argv, _extra)


if __name__ == "__main__":
    main()
