"""The OpenAI-compatible API under `/openai/v1`: files, batches, chat completions and models, so that
the official `openai` SDK (and what is built on it) runs against irq unchanged, with an irq API key as its
bearer token. Each key sees only its own files and batches; every request runs as an ordinary irq job.
Errors are OpenAI's shape (`api/errors.py`)."""

from __future__ import annotations

from fastapi import APIRouter

from api.errors import COMMON_RESPONSES, OPENAI_PREFIX
from api.openai import batches, chat, files
from api.routes.endpoints import ModelList, list_models

router = APIRouter(prefix=OPENAI_PREFIX, responses=COMMON_RESPONSES)
router.include_router(files.router)
router.include_router(batches.router)
router.include_router(chat.router)
router.add_api_route("/models", list_models, methods=["GET"], response_model=ModelList, tags=["openai"])
