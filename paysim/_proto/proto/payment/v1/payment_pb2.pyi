# mypy: ignore-errors
# (line added by paysim.protogen: protoc stubs are not strict-clean)
import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from paysim._proto.proto.common.v1 import errors_pb2 as _errors_pb2
from paysim._proto.proto.common.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_METHOD_UNSPECIFIED: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_CREDIT_CARD: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_DEBIT_CARD: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_BANK_TRANSFER: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_MOBILE_PAY: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_DIGITAL_WALLET: _ClassVar[PaymentMethod]

class PaymentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_STATUS_UNSPECIFIED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_PENDING: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_PROCESSING: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_COMPLETED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_FAILED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_CANCELLED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_REFUNDED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_EXPIRED: _ClassVar[PaymentStatus]

class PaymentScenario(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_SCENARIO_UNSPECIFIED: _ClassVar[PaymentScenario]
    PAYMENT_SCENARIO_APPROVE: _ClassVar[PaymentScenario]
    PAYMENT_SCENARIO_FAIL: _ClassVar[PaymentScenario]
    PAYMENT_SCENARIO_DELAY: _ClassVar[PaymentScenario]
    PAYMENT_SCENARIO_RANDOM: _ClassVar[PaymentScenario]
    PAYMENT_SCENARIO_TIMEOUT: _ClassVar[PaymentScenario]
PAYMENT_METHOD_UNSPECIFIED: PaymentMethod
PAYMENT_METHOD_CREDIT_CARD: PaymentMethod
PAYMENT_METHOD_DEBIT_CARD: PaymentMethod
PAYMENT_METHOD_BANK_TRANSFER: PaymentMethod
PAYMENT_METHOD_MOBILE_PAY: PaymentMethod
PAYMENT_METHOD_DIGITAL_WALLET: PaymentMethod
PAYMENT_STATUS_UNSPECIFIED: PaymentStatus
PAYMENT_STATUS_PENDING: PaymentStatus
PAYMENT_STATUS_PROCESSING: PaymentStatus
PAYMENT_STATUS_COMPLETED: PaymentStatus
PAYMENT_STATUS_FAILED: PaymentStatus
PAYMENT_STATUS_CANCELLED: PaymentStatus
PAYMENT_STATUS_REFUNDED: PaymentStatus
PAYMENT_STATUS_EXPIRED: PaymentStatus
PAYMENT_SCENARIO_UNSPECIFIED: PaymentScenario
PAYMENT_SCENARIO_APPROVE: PaymentScenario
PAYMENT_SCENARIO_FAIL: PaymentScenario
PAYMENT_SCENARIO_DELAY: PaymentScenario
PAYMENT_SCENARIO_RANDOM: PaymentScenario
PAYMENT_SCENARIO_TIMEOUT: PaymentScenario

class CreatePaymentIntentRequest(_message.Message):
    __slots__ = ("reservation_id", "amount", "user_id", "method", "scenario", "webhook_url", "idempotency_key", "metadata")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    amount: _types_pb2.Money
    user_id: str
    method: PaymentMethod
    scenario: PaymentScenario
    webhook_url: str
    idempotency_key: str
    metadata: PaymentMetadata
    def __init__(self, reservation_id: _Optional[str] = ..., amount: _Optional[_Union[_types_pb2.Money, _Mapping]] = ..., user_id: _Optional[str] = ..., method: _Optional[_Union[PaymentMethod, str]] = ..., scenario: _Optional[_Union[PaymentScenario, str]] = ..., webhook_url: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., metadata: _Optional[_Union[PaymentMetadata, _Mapping]] = ...) -> None: ...

class CreatePaymentIntentResponse(_message.Message):
    __slots__ = ("payment_intent_id", "status", "client_secret", "payment_url", "expires_at", "error")
    PAYMENT_INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    payment_intent_id: str
    status: PaymentStatus
    client_secret: str
    payment_url: str
    expires_at: _timestamp_pb2.Timestamp
    error: _errors_pb2.Error
    def __init__(self, payment_intent_id: _Optional[str] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., client_secret: _Optional[str] = ..., payment_url: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[_errors_pb2.Error, _Mapping]] = ...) -> None: ...

class ProcessPaymentRequest(_message.Message):
    __slots__ = ("payment_intent_id", "payment_details", "idempotency_key")
    PAYMENT_INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_DETAILS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    payment_intent_id: str
    payment_details: PaymentDetails
    idempotency_key: str
    def __init__(self, payment_intent_id: _Optional[str] = ..., payment_details: _Optional[_Union[PaymentDetails, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ProcessPaymentResponse(_message.Message):
    __slots__ = ("payment_id", "status", "processed_at", "transaction_id", "result", "error")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_AT_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    status: PaymentStatus
    processed_at: _timestamp_pb2.Timestamp
    transaction_id: str
    result: PaymentResult
    error: _errors_pb2.Error
    def __init__(self, payment_id: _Optional[str] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., processed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., transaction_id: _Optional[str] = ..., result: _Optional[_Union[PaymentResult, _Mapping]] = ..., error: _Optional[_Union[_errors_pb2.Error, _Mapping]] = ...) -> None: ...

class GetPaymentStatusRequest(_message.Message):
    __slots__ = ("payment_intent_id", "user_id")
    PAYMENT_INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    payment_intent_id: str
    user_id: str
    def __init__(self, payment_intent_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class GetPaymentStatusResponse(_message.Message):
    __slots__ = ("payment", "error")
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    error: _errors_pb2.Error
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ..., error: _Optional[_Union[_errors_pb2.Error, _Mapping]] = ...) -> None: ...

class CancelPaymentRequest(_message.Message):
    __slots__ = ("payment_intent_id", "reason", "refund_amount", "idempotency_key")
    PAYMENT_INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REFUND_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    payment_intent_id: str
    reason: str
    refund_amount: _types_pb2.Money
    idempotency_key: str
    def __init__(self, payment_intent_id: _Optional[str] = ..., reason: _Optional[str] = ..., refund_amount: _Optional[_Union[_types_pb2.Money, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CancelPaymentResponse(_message.Message):
    __slots__ = ("status", "cancelled_at", "refunded_amount", "refund_id", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_AT_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: PaymentStatus
    cancelled_at: _timestamp_pb2.Timestamp
    refunded_amount: _types_pb2.Money
    refund_id: str
    error: _errors_pb2.Error
    def __init__(self, status: _Optional[_Union[PaymentStatus, str]] = ..., cancelled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., refunded_amount: _Optional[_Union[_types_pb2.Money, _Mapping]] = ..., refund_id: _Optional[str] = ..., error: _Optional[_Union[_errors_pb2.Error, _Mapping]] = ...) -> None: ...

class ListPaymentsRequest(_message.Message):
    __slots__ = ("user_id", "status", "reservation_id", "pagination")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    status: PaymentStatus
    reservation_id: str
    pagination: _types_pb2.Pagination
    def __init__(self, user_id: _Optional[str] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., reservation_id: _Optional[str] = ..., pagination: _Optional[_Union[_types_pb2.Pagination, _Mapping]] = ...) -> None: ...

class ListPaymentsResponse(_message.Message):
    __slots__ = ("payments", "page_info", "error")
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    PAGE_INFO_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    payments: _containers.RepeatedCompositeFieldContainer[Payment]
    page_info: _types_pb2.PageInfo
    error: _errors_pb2.Error
    def __init__(self, payments: _Optional[_Iterable[_Union[Payment, _Mapping]]] = ..., page_info: _Optional[_Union[_types_pb2.PageInfo, _Mapping]] = ..., error: _Optional[_Union[_errors_pb2.Error, _Mapping]] = ...) -> None: ...

class SimulateWebhookRequest(_message.Message):
    __slots__ = ("payment_intent_id", "target_status", "delay_seconds", "force_trigger")
    PAYMENT_INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_STATUS_FIELD_NUMBER: _ClassVar[int]
    DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FORCE_TRIGGER_FIELD_NUMBER: _ClassVar[int]
    payment_intent_id: str
    target_status: PaymentStatus
    delay_seconds: int
    force_trigger: bool
    def __init__(self, payment_intent_id: _Optional[str] = ..., target_status: _Optional[_Union[PaymentStatus, str]] = ..., delay_seconds: _Optional[int] = ..., force_trigger: _Optional[bool] = ...) -> None: ...

class SimulateWebhookResponse(_message.Message):
    __slots__ = ("webhook_sent", "webhook_id", "scheduled_at", "error")
    WEBHOOK_SENT_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    webhook_sent: bool
    webhook_id: str
    scheduled_at: _timestamp_pb2.Timestamp
    error: _errors_pb2.Error
    def __init__(self, webhook_sent: _Optional[bool] = ..., webhook_id: _Optional[str] = ..., scheduled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[_errors_pb2.Error, _Mapping]] = ...) -> None: ...

class Payment(_message.Message):
    __slots__ = ("payment_intent_id", "payment_id", "reservation_id", "user_id", "status", "amount", "method", "created_at", "updated_at", "processed_at", "transaction_id", "result", "metadata", "refunded_amount", "cancelled_at", "cancellation_reason")
    PAYMENT_INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_AT_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_AT_FIELD_NUMBER: _ClassVar[int]
    CANCELLATION_REASON_FIELD_NUMBER: _ClassVar[int]
    payment_intent_id: str
    payment_id: str
    reservation_id: str
    user_id: str
    status: PaymentStatus
    amount: _types_pb2.Money
    method: PaymentMethod
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    processed_at: _timestamp_pb2.Timestamp
    transaction_id: str
    result: PaymentResult
    metadata: PaymentMetadata
    refunded_amount: _types_pb2.Money
    cancelled_at: _timestamp_pb2.Timestamp
    cancellation_reason: str
    def __init__(self, payment_intent_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., reservation_id: _Optional[str] = ..., user_id: _Optional[str] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., amount: _Optional[_Union[_types_pb2.Money, _Mapping]] = ..., method: _Optional[_Union[PaymentMethod, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., processed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., transaction_id: _Optional[str] = ..., result: _Optional[_Union[PaymentResult, _Mapping]] = ..., metadata: _Optional[_Union[PaymentMetadata, _Mapping]] = ..., refunded_amount: _Optional[_Union[_types_pb2.Money, _Mapping]] = ..., cancelled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancellation_reason: _Optional[str] = ...) -> None: ...

class PaymentDetails(_message.Message):
    __slots__ = ("method", "credit_card", "bank_transfer", "mobile_pay")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CREDIT_CARD_FIELD_NUMBER: _ClassVar[int]
    BANK_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    MOBILE_PAY_FIELD_NUMBER: _ClassVar[int]
    method: PaymentMethod
    credit_card: CreditCardDetails
    bank_transfer: BankTransferDetails
    mobile_pay: MobilePayDetails
    def __init__(self, method: _Optional[_Union[PaymentMethod, str]] = ..., credit_card: _Optional[_Union[CreditCardDetails, _Mapping]] = ..., bank_transfer: _Optional[_Union[BankTransferDetails, _Mapping]] = ..., mobile_pay: _Optional[_Union[MobilePayDetails, _Mapping]] = ...) -> None: ...

class CreditCardDetails(_message.Message):
    __slots__ = ("card_number", "expiry_month", "expiry_year", "cardholder_name", "cvv")
    CARD_NUMBER_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_MONTH_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_YEAR_FIELD_NUMBER: _ClassVar[int]
    CARDHOLDER_NAME_FIELD_NUMBER: _ClassVar[int]
    CVV_FIELD_NUMBER: _ClassVar[int]
    card_number: str
    expiry_month: str
    expiry_year: str
    cardholder_name: str
    cvv: str
    def __init__(self, card_number: _Optional[str] = ..., expiry_month: _Optional[str] = ..., expiry_year: _Optional[str] = ..., cardholder_name: _Optional[str] = ..., cvv: _Optional[str] = ...) -> None: ...

class BankTransferDetails(_message.Message):
    __slots__ = ("bank_code", "account_number", "account_holder")
    BANK_CODE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_HOLDER_FIELD_NUMBER: _ClassVar[int]
    bank_code: str
    account_number: str
    account_holder: str
    def __init__(self, bank_code: _Optional[str] = ..., account_number: _Optional[str] = ..., account_holder: _Optional[str] = ...) -> None: ...

class MobilePayDetails(_message.Message):
    __slots__ = ("provider", "mobile_number")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MOBILE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    provider: str
    mobile_number: str
    def __init__(self, provider: _Optional[str] = ..., mobile_number: _Optional[str] = ...) -> None: ...

class PaymentMetadata(_message.Message):
    __slots__ = ("source", "user_agent", "ip_address", "session_id", "scenario", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    source: str
    user_agent: str
    ip_address: str
    session_id: str
    scenario: PaymentScenario
    tags: _containers.ScalarMap[str, str]
    def __init__(self, source: _Optional[str] = ..., user_agent: _Optional[str] = ..., ip_address: _Optional[str] = ..., session_id: _Optional[str] = ..., scenario: _Optional[_Union[PaymentScenario, str]] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PaymentResult(_message.Message):
    __slots__ = ("success", "failure_reason", "gateway_response", "response_code", "processed_at")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_AT_FIELD_NUMBER: _ClassVar[int]
    success: bool
    failure_reason: str
    gateway_response: str
    response_code: int
    processed_at: _timestamp_pb2.Timestamp
    def __init__(self, success: _Optional[bool] = ..., failure_reason: _Optional[str] = ..., gateway_response: _Optional[str] = ..., response_code: _Optional[int] = ..., processed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
