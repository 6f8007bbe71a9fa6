"""Run moto's S3-compatible server single-threaded on loopback.

Single-threaded so that conditional puts (create-if-absent) are atomic, which the
tests rely on. Usage: python moto_server.py [--host 127.0.0.1] --port PORT
"""

import argparse

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, app, threaded=False, use_reloader=False)


if __name__ == "__main__":
    main()
