"""`python -m providers.emulator [--host H] [--port P]`: serve the emulator in the foreground."""

from __future__ import annotations

import argparse

from providers.emulator.runner import serve


def main() -> None:
    """Parse host/port and serve until interrupted."""
    parser = argparse.ArgumentParser(description="Gmail / Microsoft Graph mail emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
