"""``membudget serve``: a local web page over the same core, through JSON endpoints.

Built on FastAPI and served by uvicorn (the ``web`` extra). See :func:`membudget.web.app.create_app`.
"""
