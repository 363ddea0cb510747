# mitmproxy addon: the header transform of issue 7, scenario 4 (mitmdump -s inject.py).
import os

SECRET = os.environ["BENCH_SECRET"]


def request(flow):
    flow.request.headers["Authorization"] = SECRET
