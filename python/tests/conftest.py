"""Shared by the tests: a real `inferd serve` process."""
import os
import re
import subprocess
import time
import urllib.request

INFERD = os.environ.get("INFERD")


class Worker:
    """`inferd serve --port 0 ARGS` until stopped; its URLs once it listens."""

    def __init__(self, tmp_path, name, *args):
        self.sock = str(tmp_path / f"{name}.sock")
        self.log = open(tmp_path / f"{name}.log", "w+")
        self.proc = subprocess.Popen([INFERD, "serve", "--port", "0", "--unix", self.sock,
                                      "-t", "1", *args], stdout=subprocess.DEVNULL,
                                     stderr=self.log)
        port = None
        for _ in range(600):
            self.log.seek(0)
            m = re.search(r"listening on http://[0-9.]+:([0-9]+)", self.log.read())
            if m:
                port = int(m.group(1))
                break
            assert self.proc.poll() is None, "inferd serve exited early"
            time.sleep(0.1)
        assert port, "inferd serve did not listen"
        self.url = f"http://127.0.0.1:{port}"
        self.unix_url = f"unix://{self.sock}"
        for _ in range(600):
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("inferd serve was not ready")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


