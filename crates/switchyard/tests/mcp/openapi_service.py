"""A real OpenAPI-described service for the MCP gateway's OpenAPI targets (tests/mcp.rs,
`openapi_fastapi_service`): a small FastAPI inventory whose generated /openapi.json (OpenAPI
3.1) the gateway turns into tools. Every request it receives is recorded and served back at
/_seen (left out of the document) so the test can check what the gateway sent.

usage: openapi_service.py PORT
"""

import sys
from typing import Optional

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel

app = FastAPI(title="inventory", version="1.0.0")
seen = []
items = {1: {"id": 1, "name": "lamp", "price": 12.5, "tags": ["home"]}}


@app.middleware("http")
async def record(request: Request, call_next):
    if request.url.path != "/_seen":
        body = (await request.body()).decode("utf-8", "replace")
        seen.append(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "token": request.headers.get("x-token"),
                "content_type": request.headers.get("content-type"),
                "body": body,
            }
        )
    return await call_next(request)


class NewItem(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/_seen", include_in_schema=False)
def get_seen():
    return seen


@app.get("/items/{item_id}", operation_id="getItem", summary="Read one item")
def get_item(item_id: int, fields: Optional[str] = None):
    if item_id not in items:
        raise HTTPException(status_code=404, detail=f"no item {item_id}")
    item = items[item_id]
    if fields:
        item = {k: v for k, v in item.items() if k in fields.split(",")}
    return item


@app.get("/items", summary="Search items")
def search_items(
    tag: list[str] = Query(default=[]),
    limit: int = 10,
    x_token: Optional[str] = Header(default=None),
):
    found = [i for i in items.values() if not tag or set(tag) & set(i["tags"])]
    return {"items": found[:limit], "tags": tag, "limit": limit, "token": x_token}


@app.post("/items", operation_id="createItem", status_code=201)
def create_item(item: NewItem):
    new_id = max(items) + 1
    items[new_id] = {"id": new_id, **item.model_dump()}
    return items[new_id]


@app.delete("/items/{item_id}", operation_id="deleteItem", status_code=204)
def delete_item(item_id: int):
    if items.pop(item_id, None) is None:
        raise HTTPException(status_code=404, detail=f"no item {item_id}")
    return Response(status_code=204)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
