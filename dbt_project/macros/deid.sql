{#
  Keyed pseudonyms: HMAC-SHA256 under the de-identification secret. The secret itself
  never reaches dbt: the flow hands over its inner/outer pad keys (tasks/deid.py), and
  the same HMAC is computed here, so Python (preview names) and SQL agree.
#}

{% macro hmac_sha256(column) -%}
    {{ return(adapter.dispatch('hmac_sha256', 'dicom_etl')(column)) }}
{%- endmacro %}
{% macro default__hmac_sha256(column) -%}
    {%- if not env_var('DICOM_ETL_DEID_IPAD', '') or not env_var('DICOM_ETL_DEID_OPAD', '') -%}
        {{ exceptions.raise_compiler_error("deid_ipad/deid_opad are not set: run dbt through the build-warehouse flow, which derives them from the de-identification secret") }}
    {%- endif -%}
    case when {{ column }} is null or trim({{ column }}) = '' then null else
    sha256(unhex('{{ env_var('DICOM_ETL_DEID_OPAD', '') }}') || unhex(sha256(unhex('{{ env_var('DICOM_ETL_DEID_IPAD', '') }}') || encode({{ column }}))))
    end
{%- endmacro %}

{# A valid 2.25 UID from the first 128 bits of the HMAC. #}
{% macro pseudo_uid(column) -%}
    {{ return(adapter.dispatch('pseudo_uid', 'dicom_etl')(column)) }}
{%- endmacro %}
{% macro default__pseudo_uid(column) -%}
    {#- DuckDB 1.x casts at most 64 bits of hex at a time: two halves -#}
    '2.25.' || (
        (('0x' || substr({{ hmac_sha256(column) }}, 1, 16))::ubigint::uhugeint * 18446744073709551616::uhugeint)
        + ('0x' || substr({{ hmac_sha256(column) }}, 17, 16))::ubigint
    )::varchar
{%- endmacro %}

{# Per-patient date offset in days (1..365), stable for a patient, so intervals survive. #}
{% macro date_offset_days(patient_key) -%}
    {{ return(adapter.dispatch('date_offset_days', 'dicom_etl')(patient_key)) }}
{%- endmacro %}
{% macro default__date_offset_days(patient_key) -%}
    (1 + (('0x' || substr({{ hmac_sha256(patient_key) }}, 1, 8))::ubigint % 365))::integer
{%- endmacro %}

{% macro shift_date(column, patient_key) -%}
    ({{ column }} - {{ date_offset_days(patient_key) }})
{%- endmacro %}
