from http import HTTPStatus
from typing import Any, cast
from urllib.parse import quote

import httpx

from ...client import AuthenticatedClient, Client
from ...types import Response, UNSET
from ... import errors

from ...models.problem import Problem
from ...models.results_v1_tasks_task_id_results_get_format import ResultsV1TasksTaskIdResultsGetFormat
from ...models.results_v1_tasks_task_id_results_get_response_200_item import ResultsV1TasksTaskIdResultsGetResponse200Item
from ...models.results_v1_tasks_task_id_results_get_status_type_0 import ResultsV1TasksTaskIdResultsGetStatusType0
from ...types import UNSET, Unset
from typing import cast



def _get_kwargs(
    task_id: str,
    *,
    status: None | ResultsV1TasksTaskIdResultsGetStatusType0 | Unset = UNSET,
    format_: ResultsV1TasksTaskIdResultsGetFormat | Unset = ResultsV1TasksTaskIdResultsGetFormat.CSV,

) -> dict[str, Any]:
    

    

    params: dict[str, Any] = {}

    json_status: None | str | Unset
    if isinstance(status, Unset):
        json_status = UNSET
    elif isinstance(status, ResultsV1TasksTaskIdResultsGetStatusType0):
        json_status = status.value
    else:
        json_status = status
    params["status"] = json_status

    json_format_: str | Unset = UNSET
    if not isinstance(format_, Unset):
        json_format_ = format_.value

    params["format"] = json_format_


    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}


    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/tasks/{task_id}/results".format(task_id=quote(str(task_id), safe=""),),
        "params": params,
    }


    return _kwargs



def _parse_response(*, client: AuthenticatedClient | Client, response: httpx.Response) -> Problem | list[ResultsV1TasksTaskIdResultsGetResponse200Item] | None:
    if response.status_code == 200:
        response_200 = []
        _response_200 = response.json()
        for response_200_item_data in (_response_200):
            response_200_item = ResultsV1TasksTaskIdResultsGetResponse200Item.from_dict(response_200_item_data)



            response_200.append(response_200_item)

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

    if response.status_code == 410:
        response_410 = Problem.from_dict(response.json())



        return response_410

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


def _build_response(*, client: AuthenticatedClient | Client, response: httpx.Response) -> Response[Problem | list[ResultsV1TasksTaskIdResultsGetResponse200Item]]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    task_id: str,
    *,
    client: AuthenticatedClient,
    status: None | ResultsV1TasksTaskIdResultsGetStatusType0 | Unset = UNSET,
    format_: ResultsV1TasksTaskIdResultsGetFormat | Unset = ResultsV1TasksTaskIdResultsGetFormat.CSV,

) -> Response[Problem | list[ResultsV1TasksTaskIdResultsGetResponse200Item]]:
    """ A task's results as CSV (safe for spreadsheets), a JSON array or TXT (addresses), streamed

    Args:
        task_id (str):
        status (None | ResultsV1TasksTaskIdResultsGetStatusType0 | Unset):
        format_ (ResultsV1TasksTaskIdResultsGetFormat | Unset):  Default:
            ResultsV1TasksTaskIdResultsGetFormat.CSV.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | list[ResultsV1TasksTaskIdResultsGetResponse200Item]]
     """


    kwargs = _get_kwargs(
        task_id=task_id,
status=status,
format_=format_,

    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)

def sync(
    task_id: str,
    *,
    client: AuthenticatedClient,
    status: None | ResultsV1TasksTaskIdResultsGetStatusType0 | Unset = UNSET,
    format_: ResultsV1TasksTaskIdResultsGetFormat | Unset = ResultsV1TasksTaskIdResultsGetFormat.CSV,

) -> Problem | list[ResultsV1TasksTaskIdResultsGetResponse200Item] | None:
    """ A task's results as CSV (safe for spreadsheets), a JSON array or TXT (addresses), streamed

    Args:
        task_id (str):
        status (None | ResultsV1TasksTaskIdResultsGetStatusType0 | Unset):
        format_ (ResultsV1TasksTaskIdResultsGetFormat | Unset):  Default:
            ResultsV1TasksTaskIdResultsGetFormat.CSV.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | list[ResultsV1TasksTaskIdResultsGetResponse200Item]
     """


    return sync_detailed(
        task_id=task_id,
client=client,
status=status,
format_=format_,

    ).parsed

async def asyncio_detailed(
    task_id: str,
    *,
    client: AuthenticatedClient,
    status: None | ResultsV1TasksTaskIdResultsGetStatusType0 | Unset = UNSET,
    format_: ResultsV1TasksTaskIdResultsGetFormat | Unset = ResultsV1TasksTaskIdResultsGetFormat.CSV,

) -> Response[Problem | list[ResultsV1TasksTaskIdResultsGetResponse200Item]]:
    """ A task's results as CSV (safe for spreadsheets), a JSON array or TXT (addresses), streamed

    Args:
        task_id (str):
        status (None | ResultsV1TasksTaskIdResultsGetStatusType0 | Unset):
        format_ (ResultsV1TasksTaskIdResultsGetFormat | Unset):  Default:
            ResultsV1TasksTaskIdResultsGetFormat.CSV.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | list[ResultsV1TasksTaskIdResultsGetResponse200Item]]
     """


    kwargs = _get_kwargs(
        task_id=task_id,
status=status,
format_=format_,

    )

    response = await client.get_async_httpx_client().request(
        **kwargs
    )

    return _build_response(client=client, response=response)

async def asyncio(
    task_id: str,
    *,
    client: AuthenticatedClient,
    status: None | ResultsV1TasksTaskIdResultsGetStatusType0 | Unset = UNSET,
    format_: ResultsV1TasksTaskIdResultsGetFormat | Unset = ResultsV1TasksTaskIdResultsGetFormat.CSV,

) -> Problem | list[ResultsV1TasksTaskIdResultsGetResponse200Item] | None:
    """ A task's results as CSV (safe for spreadsheets), a JSON array or TXT (addresses), streamed

    Args:
        task_id (str):
        status (None | ResultsV1TasksTaskIdResultsGetStatusType0 | Unset):
        format_ (ResultsV1TasksTaskIdResultsGetFormat | Unset):  Default:
            ResultsV1TasksTaskIdResultsGetFormat.CSV.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | list[ResultsV1TasksTaskIdResultsGetResponse200Item]
     """


    return (await asyncio_detailed(
        task_id=task_id,
client=client,
status=status,
format_=format_,

    )).parsed
