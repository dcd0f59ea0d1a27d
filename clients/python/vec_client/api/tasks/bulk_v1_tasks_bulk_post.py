from http import HTTPStatus
from typing import Any, cast
from urllib.parse import quote

import httpx

from ...client import AuthenticatedClient, Client
from ...types import Response, UNSET
from ... import errors

from ...models.bulk_v1_tasks_bulk_post_files_body import BulkV1TasksBulkPostFilesBody
from ...models.problem import Problem
from ...models.upload import Upload
from ...types import UNSET, Unset
from typing import cast



def _get_kwargs(
    *,
    body: BulkV1TasksBulkPostFilesBody,
    account: None | str | Unset = UNSET,
    allow_duplicate: bool | Unset = False,
    name: str | Unset = '',
    idempotency_key: None | str | Unset = UNSET,

) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(idempotency_key, Unset):
        headers["Idempotency-Key"] = idempotency_key



    

    params: dict[str, Any] = {}

    json_account: None | str | Unset
    if isinstance(account, Unset):
        json_account = UNSET
    else:
        json_account = account
    params["account"] = json_account

    params["allow_duplicate"] = allow_duplicate

    params["name"] = name


    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}


    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/v1/tasks/bulk",
        "params": params,
    }

    _kwargs["files"] = body.to_multipart()

    headers["Content-Type"] = "multipart/form-data; boundary=+++"

    _kwargs["headers"] = headers
    return _kwargs



def _parse_response(*, client: AuthenticatedClient | Client, response: httpx.Response) -> Problem | Upload | None:
    if response.status_code == 201:
        response_201 = Upload.from_dict(response.json())



        return response_201

    if response.status_code == 400:
        response_400 = Problem.from_dict(response.json())



        return response_400

    if response.status_code == 401:
        response_401 = Problem.from_dict(response.json())



        return response_401

    if response.status_code == 402:
        response_402 = Problem.from_dict(response.json())



        return response_402

    if response.status_code == 403:
        response_403 = Problem.from_dict(response.json())



        return response_403

    if response.status_code == 404:
        response_404 = Problem.from_dict(response.json())



        return response_404

    if response.status_code == 408:
        response_408 = Problem.from_dict(response.json())



        return response_408

    if response.status_code == 409:
        response_409 = Problem.from_dict(response.json())



        return response_409

    if response.status_code == 413:
        response_413 = Problem.from_dict(response.json())



        return response_413

    if response.status_code == 415:
        response_415 = Problem.from_dict(response.json())



        return response_415

    if response.status_code == 422:
        response_422 = Problem.from_dict(response.json())



        return response_422

    if response.status_code == 429:
        response_429 = Problem.from_dict(response.json())



        return response_429

    if response.status_code == 503:
        response_503 = Problem.from_dict(response.json())



        return response_503

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(*, client: AuthenticatedClient | Client, response: httpx.Response) -> Response[Problem | Upload]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient,
    body: BulkV1TasksBulkPostFilesBody,
    account: None | str | Unset = UNSET,
    allow_duplicate: bool | Unset = False,
    name: str | Unset = '',
    idempotency_key: None | str | Unset = UNSET,

) -> Response[Problem | Upload]:
    """ Upload a file of addresses (CSV or one per line) as a bulk task; streamed to the store

    Args:
        account (None | str | Unset):
        allow_duplicate (bool | Unset):  Default: False.
        name (str | Unset): a name for the task (lists, the Credits History) Default: ''.
        idempotency_key (None | str | Unset): a retry with the same key gets the original answer
            (header Idempotent-Replayed: true); the same key with another request is a 409
        body (BulkV1TasksBulkPostFilesBody):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | Upload]
     """


    kwargs = _get_kwargs(
        body=body,
account=account,
allow_duplicate=allow_duplicate,
name=name,
idempotency_key=idempotency_key,

    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)

def sync(
    *,
    client: AuthenticatedClient,
    body: BulkV1TasksBulkPostFilesBody,
    account: None | str | Unset = UNSET,
    allow_duplicate: bool | Unset = False,
    name: str | Unset = '',
    idempotency_key: None | str | Unset = UNSET,

) -> Problem | Upload | None:
    """ Upload a file of addresses (CSV or one per line) as a bulk task; streamed to the store

    Args:
        account (None | str | Unset):
        allow_duplicate (bool | Unset):  Default: False.
        name (str | Unset): a name for the task (lists, the Credits History) Default: ''.
        idempotency_key (None | str | Unset): a retry with the same key gets the original answer
            (header Idempotent-Replayed: true); the same key with another request is a 409
        body (BulkV1TasksBulkPostFilesBody):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | Upload
     """


    return sync_detailed(
        client=client,
body=body,
account=account,
allow_duplicate=allow_duplicate,
name=name,
idempotency_key=idempotency_key,

    ).parsed

async def asyncio_detailed(
    *,
    client: AuthenticatedClient,
    body: BulkV1TasksBulkPostFilesBody,
    account: None | str | Unset = UNSET,
    allow_duplicate: bool | Unset = False,
    name: str | Unset = '',
    idempotency_key: None | str | Unset = UNSET,

) -> Response[Problem | Upload]:
    """ Upload a file of addresses (CSV or one per line) as a bulk task; streamed to the store

    Args:
        account (None | str | Unset):
        allow_duplicate (bool | Unset):  Default: False.
        name (str | Unset): a name for the task (lists, the Credits History) Default: ''.
        idempotency_key (None | str | Unset): a retry with the same key gets the original answer
            (header Idempotent-Replayed: true); the same key with another request is a 409
        body (BulkV1TasksBulkPostFilesBody):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | Upload]
     """


    kwargs = _get_kwargs(
        body=body,
account=account,
allow_duplicate=allow_duplicate,
name=name,
idempotency_key=idempotency_key,

    )

    response = await client.get_async_httpx_client().request(
        **kwargs
    )

    return _build_response(client=client, response=response)

async def asyncio(
    *,
    client: AuthenticatedClient,
    body: BulkV1TasksBulkPostFilesBody,
    account: None | str | Unset = UNSET,
    allow_duplicate: bool | Unset = False,
    name: str | Unset = '',
    idempotency_key: None | str | Unset = UNSET,

) -> Problem | Upload | None:
    """ Upload a file of addresses (CSV or one per line) as a bulk task; streamed to the store

    Args:
        account (None | str | Unset):
        allow_duplicate (bool | Unset):  Default: False.
        name (str | Unset): a name for the task (lists, the Credits History) Default: ''.
        idempotency_key (None | str | Unset): a retry with the same key gets the original answer
            (header Idempotent-Replayed: true); the same key with another request is a 409
        body (BulkV1TasksBulkPostFilesBody):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | Upload
     """


    return (await asyncio_detailed(
        client=client,
body=body,
account=account,
allow_duplicate=allow_duplicate,
name=name,
idempotency_key=idempotency_key,

    )).parsed
