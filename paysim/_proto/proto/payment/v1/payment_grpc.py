import purerpc
import paysim._proto.proto.payment.v1.payment_pb2 as proto_dot_payment_dot_v1_dot_payment__pb2
import google.protobuf.timestamp_pb2 as google_dot_protobuf_dot_timestamp__pb2
import paysim._proto.proto.common.v1.errors_pb2 as proto_dot_common_dot_v1_dot_errors__pb2
import paysim._proto.proto.common.v1.types_pb2 as proto_dot_common_dot_v1_dot_types__pb2


class PaymentServiceServicer(purerpc.Servicer):
    async def CreatePaymentIntent(self, input_message):
        raise NotImplementedError()

    async def ProcessPayment(self, input_message):
        raise NotImplementedError()

    async def GetPaymentStatus(self, input_message):
        raise NotImplementedError()

    async def CancelPayment(self, input_message):
        raise NotImplementedError()

    async def ListPayments(self, input_message):
        raise NotImplementedError()

    async def SimulateWebhook(self, input_message):
        raise NotImplementedError()

    @property
    def service(self) -> purerpc.Service:
        service_obj = purerpc.Service(
            "payment.v1.PaymentService"
        )
        service_obj.add_method(
            "CreatePaymentIntent",
            self.CreatePaymentIntent,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                proto_dot_payment_dot_v1_dot_payment__pb2.CreatePaymentIntentRequest,
                proto_dot_payment_dot_v1_dot_payment__pb2.CreatePaymentIntentResponse,
            )
        )
        service_obj.add_method(
            "ProcessPayment",
            self.ProcessPayment,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                proto_dot_payment_dot_v1_dot_payment__pb2.ProcessPaymentRequest,
                proto_dot_payment_dot_v1_dot_payment__pb2.ProcessPaymentResponse,
            )
        )
        service_obj.add_method(
            "GetPaymentStatus",
            self.GetPaymentStatus,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                proto_dot_payment_dot_v1_dot_payment__pb2.GetPaymentStatusRequest,
                proto_dot_payment_dot_v1_dot_payment__pb2.GetPaymentStatusResponse,
            )
        )
        service_obj.add_method(
            "CancelPayment",
            self.CancelPayment,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                proto_dot_payment_dot_v1_dot_payment__pb2.CancelPaymentRequest,
                proto_dot_payment_dot_v1_dot_payment__pb2.CancelPaymentResponse,
            )
        )
        service_obj.add_method(
            "ListPayments",
            self.ListPayments,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                proto_dot_payment_dot_v1_dot_payment__pb2.ListPaymentsRequest,
                proto_dot_payment_dot_v1_dot_payment__pb2.ListPaymentsResponse,
            )
        )
        service_obj.add_method(
            "SimulateWebhook",
            self.SimulateWebhook,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                proto_dot_payment_dot_v1_dot_payment__pb2.SimulateWebhookRequest,
                proto_dot_payment_dot_v1_dot_payment__pb2.SimulateWebhookResponse,
            )
        )
        return service_obj


class PaymentServiceStub:
    def __init__(self, channel):
        self._client = purerpc.Client(
            "payment.v1.PaymentService",
            channel
        )
        self.CreatePaymentIntent = self._client.get_method_stub(
            "CreatePaymentIntent",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                proto_dot_payment_dot_v1_dot_payment__pb2.CreatePaymentIntentRequest,
                proto_dot_payment_dot_v1_dot_payment__pb2.CreatePaymentIntentResponse,
            )
        )
        self.ProcessPayment = self._client.get_method_stub(
            "ProcessPayment",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                proto_dot_payment_dot_v1_dot_payment__pb2.ProcessPaymentRequest,
                proto_dot_payment_dot_v1_dot_payment__pb2.ProcessPaymentResponse,
            )
        )
        self.GetPaymentStatus = self._client.get_method_stub(
            "GetPaymentStatus",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                proto_dot_payment_dot_v1_dot_payment__pb2.GetPaymentStatusRequest,
                proto_dot_payment_dot_v1_dot_payment__pb2.GetPaymentStatusResponse,
            )
        )
        self.CancelPayment = self._client.get_method_stub(
            "CancelPayment",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                proto_dot_payment_dot_v1_dot_payment__pb2.CancelPaymentRequest,
                proto_dot_payment_dot_v1_dot_payment__pb2.CancelPaymentResponse,
            )
        )
        self.ListPayments = self._client.get_method_stub(
            "ListPayments",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                proto_dot_payment_dot_v1_dot_payment__pb2.ListPaymentsRequest,
                proto_dot_payment_dot_v1_dot_payment__pb2.ListPaymentsResponse,
            )
        )
        self.SimulateWebhook = self._client.get_method_stub(
            "SimulateWebhook",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                proto_dot_payment_dot_v1_dot_payment__pb2.SimulateWebhookRequest,
                proto_dot_payment_dot_v1_dot_payment__pb2.SimulateWebhookResponse,
            )
        )