//! Client quotas (`proto/schema/quota.fbs`): DescribeClientQuotas and AlterClientQuotas, as
//! Kafka's KIP-546, with whole-number values (bytes per second, percent).

use super::codec::tables;
use crate::ErrorCode;

tables! {
    /// One part of a quota entity: `user` or `client-id`, and its name (`None`: the default).
    pub struct QuotaEntityPart(QuotaEntityPart, QuotaEntityPartArgs) {
        entity_type: String = string,
        entity_name: Option<String> = opt_string,
    }

    pub struct QuotaValue(QuotaValue, QuotaValueArgs) {
        key: String = string,
        value: u64 = scalar,
    }

    pub struct QuotaOp(QuotaOp, QuotaOpArgs) {
        key: String = string,
        value: u64 = scalar,
        remove: bool = scalar,
    }

    pub struct QuotaAlterEntry(QuotaAlterEntry, QuotaAlterEntryArgs) {
        entity: Vec<QuotaEntityPart> = tables,
        ops: Vec<QuotaOp> = tables,
    }

    /// AlterClientQuotas request.
    pub struct AlterClientQuotasRequest(AlterClientQuotasRequest, AlterClientQuotasRequestArgs) {
        entries: Vec<QuotaAlterEntry> = tables,
        validate_only: bool = scalar,
    }

    pub struct QuotaAlterResult(QuotaAlterResult, QuotaAlterResultArgs) {
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
        entity: Vec<QuotaEntityPart> = tables,
    }

    /// AlterClientQuotas response.
    pub struct AlterClientQuotasResponse(AlterClientQuotasResponse, AlterClientQuotasResponseArgs) {
        throttle_time_ms: u32 = scalar,
        entries: Vec<QuotaAlterResult> = tables,
    }

    /// A filter component; `match_type` 0: the name in `name`, 1: the default, 2: any.
    pub struct QuotaFilterComponent(QuotaFilterComponent, QuotaFilterComponentArgs) {
        entity_type: String = string,
        match_type: u8 = scalar,
        name: Option<String> = opt_string,
    }

    /// DescribeClientQuotas request.
    pub struct DescribeClientQuotasRequest(DescribeClientQuotasRequest, DescribeClientQuotasRequestArgs) {
        components: Vec<QuotaFilterComponent> = tables,
        strict: bool = scalar,
    }

    pub struct QuotaDescribeEntry(QuotaDescribeEntry, QuotaDescribeEntryArgs) {
        entity: Vec<QuotaEntityPart> = tables,
        values: Vec<QuotaValue> = tables,
    }

    /// DescribeClientQuotas response.
    pub struct DescribeClientQuotasResponse(DescribeClientQuotasResponse, DescribeClientQuotasResponseArgs) {
        throttle_time_ms: u32 = scalar,
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
        entries: Vec<QuotaDescribeEntry> = tables,
    }
}
