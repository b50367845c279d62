"""Container health check: GET http://127.0.0.1:$HIMNET_PORT<path> and exit 0 on HTTP 200.

    python healthcheck.py [/readyz]

Standard library only, so it works in every image without curl. Exit 1 (unhealthy) on any other
status, a refused connection or a time-out (3 s, below the HEALTHCHECK timeout).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    path = argv[0] if argv else "/readyz"
    port = os.environ.get("HIMNET_PORT", "8000")
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 (fixed loopback URL)
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"healthcheck: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
