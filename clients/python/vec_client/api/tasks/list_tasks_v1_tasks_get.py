from http import HTTPStatus
from typing import Any, cast
from urllib.parse import quote

import httpx

from ...client import AuthenticatedClient, Client
from ...types import Response, UNSET
from ... import errors

from ...models.list_tasks_v1_tasks_get_status_type_0 import ListTasksV1TasksGetStatusType0
from ...models.problem import Problem
from ...models.task_page import TaskPage
from ...types import UNSET, Unset
from typing import cast



def _get_kwargs(
    *,
    status: ListTasksV1TasksGetStatusType0 | None | Unset = UNSET,
    cursor: None | str | Unset = UNSET,
    limit: int | Unset = 100,
    account: None | str | Unset = UNSET,
    by: None | str | Unset = UNSET,

) -> dict[str, Any]:
    

    

    params: dict[str, Any] = {}

    json_status: None | str | Unset
    if isinstance(status, Unset):
        json_status = UNSET
    elif isinstance(status, ListTasksV1TasksGetStatusType0):
        json_status = status.value
    else:
        json_status = status
    params["status"] = json_status

    json_cursor: None | str | Unset
    if isinstance(cursor, Unset):
        json_cursor = UNSET
    else:
        json_cursor = cursor
    params["cursor"] = json_cursor

    params["limit"] = limit

    json_account: None | str | Unset
    if isinstance(account, Unset):
        json_account = UNSET
    else:
        json_account = account
    params["account"] = json_account

    json_by: None | str | Unset
    if isinstance(by, Unset):
        json_by = UNSET
    else:
        json_by = by
    params["by"] = json_by


    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}


    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/tasks",
        "params": params,
    }


    return _kwargs



def _parse_response(*, client: AuthenticatedClient | Client, response: httpx.Response) -> Problem | TaskPage | None:
    if response.status_code == 200:
        response_200 = TaskPage.from_dict(response.json())



        return response_200

    if response.status_code == 400:
        response_400 = Problem.from_dict(response.json())



        return response_400

    if response.status_code == 401:
        response_401 = Problem.from_dict(response.json())



        return response_401

    if response.status_code == 403:
        response_403 = Problem.from_dict(response.json())



        return response_403

    if response.status_code == 404:
        response_404 = Problem.from_dict(response.json())



        return response_404

    if response.status_code == 408:
        response_408 = Problem.from_dict(response.json())



        return response_408

    if response.status_code == 413:
        response_413 = Problem.from_dict(response.json())



        return response_413

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


def _build_response(*, client: AuthenticatedClient | Client, response: httpx.Response) -> Response[Problem | TaskPage]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient,
    status: ListTasksV1TasksGetStatusType0 | None | Unset = UNSET,
    cursor: None | str | Unset = UNSET,
    limit: int | Unset = 100,
    account: None | str | Unset = UNSET,
    by: None | str | Unset = UNSET,

) -> Response[Problem | TaskPage]:
    """ Tasks, oldest first, a page at a time

    Args:
        status (ListTasksV1TasksGetStatusType0 | None | Unset):
        cursor (None | str | Unset):
        limit (int | Unset):  Default: 100.
        account (None | str | Unset):
        by (None | str | Unset): only what this issuer did: admin, apikey:KEY_ID, cli:USER or
            engine

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | TaskPage]
     """


    kwargs = _get_kwargs(
        status=status,
cursor=cursor,
limit=limit,
account=account,
by=by,

    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)

def sync(
    *,
    client: AuthenticatedClient,
    status: ListTasksV1TasksGetStatusType0 | None | Unset = UNSET,
    cursor: None | str | Unset = UNSET,
    limit: int | Unset = 100,
    account: None | str | Unset = UNSET,
    by: None | str | Unset = UNSET,

) -> Problem | TaskPage | None:
    """ Tasks, oldest first, a page at a time

    Args:
        status (ListTasksV1TasksGetStatusType0 | None | Unset):
        cursor (None | str | Unset):
        limit (int | Unset):  Default: 100.
        account (None | str | Unset):
        by (None | str | Unset): only what this issuer did: admin, apikey:KEY_ID, cli:USER or
            engine

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | TaskPage
     """


    return sync_detailed(
        client=client,
status=status,
cursor=cursor,
limit=limit,
account=account,
by=by,

    ).parsed

async def asyncio_detailed(
    *,
    client: AuthenticatedClient,
    status: ListTasksV1TasksGetStatusType0 | None | Unset = UNSET,
    cursor: None | str | Unset = UNSET,
    limit: int | Unset = 100,
    account: None | str | Unset = UNSET,
    by: None | str | Unset = UNSET,

) -> Response[Problem | TaskPage]:
    """ Tasks, oldest first, a page at a time

    Args:
        status (ListTasksV1TasksGetStatusType0 | None | Unset):
        cursor (None | str | Unset):
        limit (int | Unset):  Default: 100.
        account (None | str | Unset):
        by (None | str | Unset): only what this issuer did: admin, apikey:KEY_ID, cli:USER or
            engine

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | TaskPage]
     """


    kwargs = _get_kwargs(
        status=status,
cursor=cursor,
limit=limit,
account=account,
by=by,

    )

    response = await client.get_async_httpx_client().request(
        **kwargs
    )

    return _build_response(client=client, response=response)

async def asyncio(
    *,
    client: AuthenticatedClient,
    status: ListTasksV1TasksGetStatusType0 | None | Unset = UNSET,
    cursor: None | str | Unset = UNSET,
    limit: int | Unset = 100,
    account: None | str | Unset = UNSET,
    by: None | str | Unset = UNSET,

) -> Problem | TaskPage | None:
    """ Tasks, oldest first, a page at a time

    Args:
        status (ListTasksV1TasksGetStatusType0 | None | Unset):
        cursor (None | str | Unset):
        limit (int | Unset):  Default: 100.
        account (None | str | Unset):
        by (None | str | Unset): only what this issuer did: admin, apikey:KEY_ID, cli:USER or
            engine

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | TaskPage
     """


    return (await asyncio_detailed(
        client=client,
status=status,
cursor=cursor,
limit=limit,
account=account,
by=by,

    )).parsed
