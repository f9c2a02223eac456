"""The bare peer of ``bench.gateway``: FastAPI + SQLAlchemy serving the same rows in
plaintext, with no policy, consent, encryption or audit (what the gateway is measured
against). Run by the benchmark as ``uvicorn bench.gateway_bare:app_from_env --factory``.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Column, MetaData, String, Table, create_engine, select, update

META = MetaData()
ROWS = Table("bare_customers", META,
             Column("id", String(64), primary_key=True),
             Column("full_name", String(255)), Column("email", String(255), index=True),
             Column("country", String(8)))


def app_from_env() -> FastAPI:
    engine = create_engine(os.environ["BENCH_BARE_URL"], pool_size=16)
    app = FastAPI()

    def one(rid: str) -> dict[str, Any]:
        with engine.connect() as conn:
            row = conn.execute(select(ROWS).where(ROWS.c.id == rid)).mappings().first()
        if row is None:
            raise HTTPException(404)
        return dict(row)

    @app.get("/rows/{rid}")
    async def get_row(rid: str) -> dict[str, Any]:
        return await run_in_threadpool(one, rid)

    @app.post("/rows/search")
    async def search(body: dict[str, str]) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            with engine.connect() as conn:
                return [dict(r) for r in conn.execute(
                    select(ROWS).where(ROWS.c.email == body["email"])).mappings()]
        return await run_in_threadpool(run)

    @app.put("/rows/{rid}")
    async def put_row(rid: str, body: dict[str, str]) -> None:
        def run() -> None:
            with engine.begin() as conn:
                conn.execute(update(ROWS).where(ROWS.c.id == rid).values(**body))
        await run_in_threadpool(run)

    return app
