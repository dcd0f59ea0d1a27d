from http import HTTPStatus
from typing import Any, cast
from urllib.parse import quote

import httpx

from ...client import AuthenticatedClient, Client
from ...types import Response, UNSET
from ... import errors

from ...models.email_result import EmailResult
from ...models.error_body import ErrorBody
from ...models.insufficient_credits_body import InsufficientCreditsBody
from ...models.rate_limited_body import RateLimitedBody
from ...models.single_pending import SinglePending
from ...models.verify_single_api_verify_single_post_verify_single_in import VerifySingleApiVerifySinglePostVerifySingleIn
from ...types import UNSET, Unset
from typing import cast



def _get_kwargs(
    *,
    body: VerifySingleApiVerifySinglePostVerifySingleIn,
    account: None | str | Unset = UNSET,
    idempotency_key: str | Unset = UNSET,

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


    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}


    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/api/verify-single",
        "params": params,
    }

    _kwargs["json"] = body.to_dict()

    headers["Content-Type"] = "application/json"

    _kwargs["headers"] = headers
    return _kwargs



def _parse_response(*, client: AuthenticatedClient | Client, response: httpx.Response) -> EmailResult | ErrorBody | InsufficientCreditsBody | RateLimitedBody | SinglePending | None:
    if response.status_code == 200:
        response_200 = EmailResult.from_dict(response.json())



        return response_200

    if response.status_code == 202:
        response_202 = SinglePending.from_dict(response.json())



        return response_202

    if response.status_code == 400:
        response_400 = ErrorBody.from_dict(response.json())



        return response_400

    if response.status_code == 401:
        response_401 = ErrorBody.from_dict(response.json())



        return response_401

    if response.status_code == 402:
        response_402 = InsufficientCreditsBody.from_dict(response.json())



        return response_402

    if response.status_code == 403:
        response_403 = ErrorBody.from_dict(response.json())



        return response_403

    if response.status_code == 404:
        response_404 = ErrorBody.from_dict(response.json())



        return response_404

    if response.status_code == 409:
        response_409 = ErrorBody.from_dict(response.json())



        return response_409

    if response.status_code == 410:
        response_410 = ErrorBody.from_dict(response.json())



        return response_410

    if response.status_code == 413:
        response_413 = ErrorBody.from_dict(response.json())



        return response_413

    if response.status_code == 422:
        response_422 = ErrorBody.from_dict(response.json())



        return response_422

    if response.status_code == 429:
        response_429 = RateLimitedBody.from_dict(response.json())



        return response_429

    if response.status_code == 503:
        response_503 = ErrorBody.from_dict(response.json())



        return response_503

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(*, client: AuthenticatedClient | Client, response: httpx.Response) -> Response[EmailResult | ErrorBody | InsufficientCreditsBody | RateLimitedBody | SinglePending]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient,
    body: VerifySingleApiVerifySinglePostVerifySingleIn,
    account: None | str | Unset = UNSET,
    idempotency_key: str | Unset = UNSET,

) -> Response[EmailResult | ErrorBody | InsufficientCreditsBody | RateLimitedBody | SinglePending]:
    """ Verify one email in real time (1 credit; an unknown result is refunded)

    Args:
        account (None | str | Unset): the admin token names the account; an API key acts for its
            own
        idempotency_key (str | Unset):
        body (VerifySingleApiVerifySinglePostVerifySingleIn):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[EmailResult | ErrorBody | InsufficientCreditsBody | RateLimitedBody | SinglePending]
     """


    kwargs = _get_kwargs(
        body=body,
account=account,
idempotency_key=idempotency_key,

    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)

def sync(
    *,
    client: AuthenticatedClient,
    body: VerifySingleApiVerifySinglePostVerifySingleIn,
    account: None | str | Unset = UNSET,
    idempotency_key: str | Unset = UNSET,

) -> EmailResult | ErrorBody | InsufficientCreditsBody | RateLimitedBody | SinglePending | None:
    """ Verify one email in real time (1 credit; an unknown result is refunded)

    Args:
        account (None | str | Unset): the admin token names the account; an API key acts for its
            own
        idempotency_key (str | Unset):
        body (VerifySingleApiVerifySinglePostVerifySingleIn):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        EmailResult | ErrorBody | InsufficientCreditsBody | RateLimitedBody | SinglePending
     """


    return sync_detailed(
        client=client,
body=body,
account=account,
idempotency_key=idempotency_key,

    ).parsed

async def asyncio_detailed(
    *,
    client: AuthenticatedClient,
    body: VerifySingleApiVerifySinglePostVerifySingleIn,
    account: None | str | Unset = UNSET,
    idempotency_key: str | Unset = UNSET,

) -> Response[EmailResult | ErrorBody | InsufficientCreditsBody | RateLimitedBody | SinglePending]:
    """ Verify one email in real time (1 credit; an unknown result is refunded)

    Args:
        account (None | str | Unset): the admin token names the account; an API key acts for its
            own
        idempotency_key (str | Unset):
        body (VerifySingleApiVerifySinglePostVerifySingleIn):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[EmailResult | ErrorBody | InsufficientCreditsBody | RateLimitedBody | SinglePending]
     """


    kwargs = _get_kwargs(
        body=body,
account=account,
idempotency_key=idempotency_key,

    )

    response = await client.get_async_httpx_client().request(
        **kwargs
    )

    return _build_response(client=client, response=response)

async def asyncio(
    *,
    client: AuthenticatedClient,
    body: VerifySingleApiVerifySinglePostVerifySingleIn,
    account: None | str | Unset = UNSET,
    idempotency_key: str | Unset = UNSET,

) -> EmailResult | ErrorBody | InsufficientCreditsBody | RateLimitedBody | SinglePending | None:
    """ Verify one email in real time (1 credit; an unknown result is refunded)

    Args:
        account (None | str | Unset): the admin token names the account; an API key acts for its
            own
        idempotency_key (str | Unset):
        body (VerifySingleApiVerifySinglePostVerifySingleIn):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        EmailResult | ErrorBody | InsufficientCreditsBody | RateLimitedBody | SinglePending
     """


    return (await asyncio_detailed(
        client=client,
body=body,
account=account,
idempotency_key=idempotency_key,

    )).parsed
