{{ config(unique_key='sop_instance_pseudo_uid') }}
-- depends_on: {{ source('build', 'build_files') }}
{#- The de-identified DICOM files of the deid/ zone, one row per image: exported, or withheld
    with a reason. The file is named by the image pseudonym (tasks/deid/export.py) and its
    header carries the same pseudonymous UIDs as these rows. #}
with exports as (
    select * from {{ ref('stg_deid_exports') }} as exports
    {% if is_incremental() %}
    where {{ in_build('exports') }}
    {% endif %}
),

pseudonymized as (
    select
        deid_sop.pseudo_uid as sop_instance_pseudo_uid,
        exports.image_pseudonym,
        exports.deid_key,
        exports.deid_bytes,
        exports.export_status,
        exports.pixel_deid_status,
        exports.pixel_deid_method,
        exports.export_reason,
        exports.ingested_at
    from exports
    left join {{ source('deid', 'deid_pseudonyms') }} as deid_sop
        on deid_sop.original = exports.sop_instance_uid
),

joined as (
    select
        pseudonymized.sop_instance_pseudo_uid,
        images.series_pseudo_uid,
        images.study_pseudo_uid,
        pseudonymized.image_pseudonym,
        pseudonymized.deid_key,
        pseudonymized.deid_bytes,
        pseudonymized.export_status,
        pseudonymized.pixel_deid_status,
        pseudonymized.pixel_deid_method,
        pseudonymized.export_reason,
        pseudonymized.ingested_at,
        'YES' as patient_identity_removed,
        '{{ var("deid_method") }}' as deidentification_method,
        case
            when pseudonymized.pixel_deid_status = 'cleaned' then '{{ var("deid_method_codes") ~ "\\113101" }}'
            else '{{ var("deid_method_codes") }}'
        end as deidentification_method_codes
    from pseudonymized
    left join {{ ref('images') }} as images
        on images.sop_instance_pseudo_uid = pseudonymized.sop_instance_pseudo_uid
)

select * from joined
