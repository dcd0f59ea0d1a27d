""" Contains all the data models used in inputs/outputs """

from .account_in import AccountIn
from .api_key import ApiKey
from .attempt import Attempt
from .balance import Balance
from .bulk_task import BulkTask
from .bulk_v1_tasks_bulk_post_files_body import BulkV1TasksBulkPostFilesBody
from .delivery import Delivery
from .delivery_detail import DeliveryDetail
from .delivery_detail_payload import DeliveryDetailPayload
from .delivery_detail_status import DeliveryDetailStatus
from .delivery_page import DeliveryPage
from .delivery_status import DeliveryStatus
from .email_result import EmailResult
from .email_result_deliverability import EmailResultDeliverability
from .email_result_status import EmailResultStatus
from .endpoint import Endpoint
from .endpoint_list import EndpointList
from .error_body import ErrorBody
from .event import Event
from .event_data import EventData
from .event_metadata import EventMetadata
from .event_page import EventPage
from .grant_in import GrantIn
from .grant_in_bucket import GrantInBucket
from .grant_in_reason_type_0 import GrantInReasonType0
from .history_page import HistoryPage
from .history_row import HistoryRow
from .history_v1_accounts_account_id_history_get_type_type_0 import HistoryV1AccountsAccountIdHistoryGetTypeType0
from .insufficient_credits_body import InsufficientCreditsBody
from .key_in import KeyIn
from .key_in_scopes_item import KeyInScopesItem
from .list_deliveries_v1_webhooks_endpoint_id_deliveries_get_status_type_0 import ListDeliveriesV1WebhooksEndpointIdDeliveriesGetStatusType0
from .list_tasks_v1_tasks_get_status_type_0 import ListTasksV1TasksGetStatusType0
from .new_endpoint import NewEndpoint
from .problem import Problem
from .rate_limited_body import RateLimitedBody
from .results_v1_tasks_task_id_results_get_format import ResultsV1TasksTaskIdResultsGetFormat
from .results_v1_tasks_task_id_results_get_response_200_item import ResultsV1TasksTaskIdResultsGetResponse200Item
from .results_v1_tasks_task_id_results_get_status_type_0 import ResultsV1TasksTaskIdResultsGetStatusType0
from .retention import Retention
from .single_in import SingleIn
from .single_pending import SinglePending
from .single_result import SingleResult
from .task import Task
from .task_kind import TaskKind
from .task_page import TaskPage
from .task_results import TaskResults
from .task_status import TaskStatus
from .upload import Upload
from .verify_bulk_api_verify_bulk_post_verify_bulk_in import VerifyBulkApiVerifyBulkPostVerifyBulkIn
from .verify_single_api_verify_single_post_verify_single_in import VerifySingleApiVerifySinglePostVerifySingleIn
from .webhook_in import WebhookIn

__all__ = (
    "AccountIn",
    "ApiKey",
    "Attempt",
    "Balance",
    "BulkTask",
    "BulkV1TasksBulkPostFilesBody",
    "Delivery",
    "DeliveryDetail",
    "DeliveryDetailPayload",
    "DeliveryDetailStatus",
    "DeliveryPage",
    "DeliveryStatus",
    "EmailResult",
    "EmailResultDeliverability",
    "EmailResultStatus",
    "Endpoint",
    "EndpointList",
    "ErrorBody",
    "Event",
    "EventData",
    "EventMetadata",
    "EventPage",
    "GrantIn",
    "GrantInBucket",
    "GrantInReasonType0",
    "HistoryPage",
    "HistoryRow",
    "HistoryV1AccountsAccountIdHistoryGetTypeType0",
    "InsufficientCreditsBody",
    "KeyIn",
    "KeyInScopesItem",
    "ListDeliveriesV1WebhooksEndpointIdDeliveriesGetStatusType0",
    "ListTasksV1TasksGetStatusType0",
    "NewEndpoint",
    "Problem",
    "RateLimitedBody",
    "ResultsV1TasksTaskIdResultsGetFormat",
    "ResultsV1TasksTaskIdResultsGetResponse200Item",
    "ResultsV1TasksTaskIdResultsGetStatusType0",
    "Retention",
    "SingleIn",
    "SinglePending",
    "SingleResult",
    "Task",
    "TaskKind",
    "TaskPage",
    "TaskResults",
    "TaskStatus",
    "Upload",
    "VerifyBulkApiVerifyBulkPostVerifyBulkIn",
    "VerifySingleApiVerifySinglePostVerifySingleIn",
    "WebhookIn",
)
