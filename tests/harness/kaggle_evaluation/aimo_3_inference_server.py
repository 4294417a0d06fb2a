"""`AIMO3InferenceServer(predict)` as the contract describes it: `serve()` starts the server
and, under KAGGLE_IS_COMPETITION_RERUN, blocks for good (the gateway runs in another process);
`run_local_gateway(paths)` runs the gateway in this process over `paths[0]` and writes
submission.parquet in the working directory. The transport is multiprocessing.connection on
127.0.0.1 (port AIMO_HARNESS_PORT, default 50051), not Kaggle's gRPC; calls go through one
worker thread, as Kaggle's server's do."""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Listener

import polars as pl

AUTHKEY = b"aimo-harness"


def address():
    return ("127.0.0.1", int(os.environ.get("AIMO_HARNESS_PORT", "50051")))


class AIMO3InferenceServer:
    def __init__(self, predict):
        self.predict = predict
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="grpc-worker")
        self.listener = None

    def _answer(self, columns: dict):
        series = [pl.Series(name, values) for name, values in columns.items()]
        reply = self.predict(*series)
        if not isinstance(reply, pl.DataFrame):
            reply = pl.from_pandas(reply)
        return reply.to_dict(as_series=False)

    def _connection(self, conn):
        with conn:
            while True:
                try:
                    kind, payload = conn.recv()
                except EOFError:
                    return
                if kind == "stop":
                    return
                try:
                    conn.send(("ok", self.worker.submit(self._answer, payload).result()))
                except BaseException as exc:  # the gateway's SERVER_RAISED_EXCEPTION
                    conn.send(("raised", f"{type(exc).__name__}: {exc}"))

    def _accept(self):
        while True:
            try:
                conn = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def start(self):
        self.listener = Listener(address(), authkey=AUTHKEY)
        threading.Thread(target=self._accept, name="harness-server", daemon=True).start()

    def serve(self):
        self.start()
        if os.getenv("KAGGLE_IS_COMPETITION_RERUN") is not None:
            while True:  # the rerun: nothing after serve() runs
                time.sleep(3600)

    def run_local_gateway(self, data_paths=None, file_share_dir=None):
        from gateway import run_gateway  # tests/harness/gateway.py

        self.start()
        try:
            result = run_gateway(data_paths[0], ".", startup_limit_s=60)
            if not result["Succeeded"]:
                raise RuntimeError(f"GatewayRuntimeError: {result['error']}")
        finally:
            self.listener.close()
