"""Runs a kbuild artifact with SO_REUSEPORT on its listening sockets, so that
several processes can serve one port (each with its own batcher):
python reuse_port.py ARTIFACT serve --http-port PORT"""

import asyncio.base_events
import runpy
import sys

_create_server = asyncio.base_events.BaseEventLoop.create_server


async def create_server(self, *args, **kwargs):
    kwargs["reuse_port"] = True
    return await _create_server(self, *args, **kwargs)


asyncio.base_events.BaseEventLoop.create_server = create_server
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
