"""InfluxSink's v2 write path: influxdb-client's ``InfluxDBClientAsync``.

**asyncio only**: influxdb-client's async client is built on aiohttp. This leaf module is imported
lazily (in a worker thread: influxdb-client takes about half a second to import) by
:class:`~goml_async.agent.influx.InfluxSink` when ``api="v2"`` writes on asyncio; under trio the
sink refuses the v2 path before getting here.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from ..errors import SinkError
from ._influx_wire import Unavailable, describe, raise_for_status

__all__ = ["V2Writer"]


class V2Writer:
    """Writes line-protocol batches to ``/api/v2/write`` with nanosecond precision.

    Raises :class:`~goml_async.agent._influx_wire.Unavailable` when InfluxDB cannot take the
    write now, and SinkError when it refuses it.
    """

    def __init__(self, url: str, *, token: str, org: str, bucket: str, timeout: float) -> None:
        self.url = url
        self.org = org
        self.bucket = bucket
        # influxdb-client's annotations are partial (WritePrecision.NS is typed as str, close()
        # is unannotated): used through Any.
        self._client: Any = InfluxDBClientAsync(
            url=url, token=token, org=org, timeout=timeout * 1000
        )
        self._write_api: Any = self._client.write_api()

    async def write(self, lines: list[str]) -> None:
        try:
            ok = await self._write_api.write(
                bucket=self.bucket, org=self.org, record=lines, write_precision=WritePrecision.NS
            )
        except ApiException as exc:
            if not exc.status:  # the client's own failure, not an HTTP answer
                raise SinkError(f"influxdb-client could not write: {exc.reason}") from exc
            body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else exc.body
            raise_for_status(exc.status, str(body or exc.reason), f"{self.url}/api/v2/write")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unavailable(f"InfluxDB at {self.url} is unavailable: {describe(exc)}") from exc
        if not ok:
            raise SinkError(f"{self.url}/api/v2/write answered without confirming the write")

    async def aclose(self) -> None:
        await self._client.close()
