"""A reference MCP server built with the official `mcp` Python SDK (FastMCP, streamable HTTP),
whose tools ask the client back: sampling, and elicitation with a plain schema, with defaults,
with a titled enum and with a multi-select enum. The MCP tests put it behind the gateway.

usage: ref_server.py PORT
"""

import sys

from pydantic import BaseModel, Field

from mcp import types
from mcp.server.fastmcp import Context, FastMCP

mcp = FastMCP("reference", host="127.0.0.1", port=int(sys.argv[1]), log_level="WARNING")


class Plain(BaseModel):
    color: str


class WithDefaults(BaseModel):
    color: str = "red"
    count: int = 3


class TitledEnum(BaseModel):
    size: str = Field(
        description="size",
        json_schema_extra={"enum": ["s", "m", "l"], "enumNames": ["Small", "Medium", "Large"]},
    )


class MultiSelect(BaseModel):
    tags: list[str] = Field(
        default_factory=list,
        json_schema_extra={"items": {"type": "string", "enum": ["a", "b", "c"]}},
    )


@mcp.tool()
async def sample(prompt: str, ctx: Context) -> str:
    message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))
    r = await ctx.session.create_message(messages=[message], max_tokens=20)
    return f"sampled: {r.content.text}"


async def _elicit(ctx: Context, message: str, schema) -> str:
    r = await ctx.elicit(message, schema)
    data = r.data.model_dump() if r.action == "accept" else None
    return f"{r.action}: {data}"


@mcp.tool()
async def elicit_plain(ctx: Context) -> str:
    return await _elicit(ctx, "color?", Plain)


@mcp.tool()
async def elicit_defaults(ctx: Context) -> str:
    return await _elicit(ctx, "defaults?", WithDefaults)


@mcp.tool()
async def elicit_titled(ctx: Context) -> str:
    return await _elicit(ctx, "size?", TitledEnum)


@mcp.tool()
async def elicit_multi(ctx: Context) -> str:
    return await _elicit(ctx, "tags?", MultiSelect)


mcp.run(transport="streamable-http")
