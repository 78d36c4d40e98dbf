"""Files in the fake Slack: `files.info` answered by the fake Web API (registered on it at run
time, tests/fakeslack untouched) and each file's url_private_download served over real HTTP by
a small server that, as Slack does, wants the bot token."""

from __future__ import annotations

import itertools
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fakeslack.server import FakeSlack

BOT_TOKEN = "xoxb-test"


class FakeFiles:
    def __init__(self, fake: FakeSlack) -> None:
        self.files: dict[str, tuple[str, bytes]] = {}
        self.downloads: list[tuple[str, str | None]] = []  # (file id, Authorization header)
        self._serial = itertools.count(1)
        files = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                file_id = self.path.rsplit("/", 1)[-1]
                auth = self.headers.get("Authorization")
                files.downloads.append((file_id, auth))
                if auth != f"Bearer {BOT_TOKEN}" or file_id not in files.files:
                    self.send_response(404 if auth else 302)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = files.files[file_id][1]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        fake._handlers["files.info"] = self._files_info  # noqa: SLF001 (the fake's method table)

    def add(self, name: str, body: bytes) -> str:
        file_id = f"F0CSV{next(self._serial):04d}"
        self.files[file_id] = (name, body)
        return file_id

    def shared(self, file_id: str) -> dict[str, Any]:
        """The file as a message event carries it."""
        name, body = self.files[file_id]
        return {"id": file_id, "name": name, "filetype": "csv" if name.endswith(".csv") else "xlsx",
                "size": len(body)}  # fmt: skip

    def _files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        file_id = str(args.get("file", ""))
        if file_id not in self.files:
            return {"ok": False, "error": "file_not_found"}
        name, body = self.files[file_id]
        url = f"{self.url}/files-pri/T0TEST-{file_id}/download/{file_id}"
        return {"file": {"id": file_id, "name": name, "size": len(body), "url_private": url,
                         "url_private_download": url}}  # fmt: skip

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
