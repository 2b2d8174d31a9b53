"""SkyeIM WebSocket gateway.

    python wsserver.py -f etc/ws.yaml                # the gateway alone
    python wsserver.py --standalone -f etc/ws.yaml   # gateway + Message, Friend, Auth services

In standalone mode the three services run in this process too, each configured
by its own file beside the -f file (message.yaml, friend.yaml, auth.yaml), and
the gateway still calls them over HTTP, exactly as under supervisord.
"""
import sys

from skyeim.gateway.cli import main  # monkey-patches gevent before anything else is imported

if __name__ == "__main__":
    sys.exit(main())
