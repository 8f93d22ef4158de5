{{ config(unique_key='device_pseudo_id') }}
-- depends_on: {{ source('build', 'build_files') }}
-- depends_on: {{ ref('internal_anonymization_rules') }}
-- depends_on: {{ ref('internal_column_types') }}
{#- The column list and the pseudonym joins come from the internal_anonymization_rules seed (macros/deid.sql). #}
with devices as (
    select * from {{ ref('stg_devices') }} as devices
    {% if is_incremental() %}
    where {{ in_build('devices') }}
    {% endif %}
),

deidentified as (
    select
        {{ deid_columns('devices', 'devices') }},
        devices.ingested_at,
        {{ deid_provenance() }}
    from devices
    {{- deid_joins('devices', 'devices') }}
)

select * from deidentified
